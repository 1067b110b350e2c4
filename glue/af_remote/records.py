"""Spawns and sessions in Aetherflow's session registry, where ``af`` looks for them.

The registry is a directory of JSON files shared with other writers (``af`` itself,
other af-remote processes). Two rules keep it safe to share:

- every write is a read-modify-write under an exclusive ``flock`` on ``<file>.lock``,
  replacing the file atomically, so readers need no lock and never see half a file;
- records we did not create, and keys we do not know, are written back untouched.

A file we cannot understand (newer ``schema_version``, not JSON, wrong shape) is an
error and is never rewritten: guessing would destroy another writer's data.

This module is imported by ``af-remote ls`` and must stay light: stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from af_remote.errors import RegistryError
from af_remote.paths import ensure_private_dir, registry_dir
from af_remote.redact import redact

SCHEMA_VERSION = 1
SPAWN_STATES = ("requested", "spawning", "running", "terminated", "failed", "unknown")
SESSION_STATUSES = ("active", "terminated")

SPAWNS_FILE = "remote_spawns.json"
SESSIONS_FILE = "sessions.json"

DEFAULT_LOCK_TIMEOUT = 10.0
_LOCK_POLL_INTERVAL = 0.01

# Fields af-remote may change on a spawn after creating it. Anything else of ours goes
# under ``af_remote``; a typo here should fail loudly rather than add a stray key that
# other writers would then carry forever.
_UPDATABLE_SPAWN_FIELDS = frozenset(
    {
        "provider",
        "request_id",
        "provider_sandbox_id",
        "provider_operation_id",
        "server_ref",
        "session_id",
        "state",
        "last_error",
        "af_remote",
    }
)

_LEFT_AS_IS = "the file was left as it is"

# Crockford's base32 in lowercase: its characters sort in the same order as their
# values, so spawn ids sort by creation time.
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_LENGTH = 12
_ID_RANDOM_BITS = 18  # the rest of the 60 bits hold milliseconds since the epoch

# typing and copy are left to the writers: `ls` only reads, and must start fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    Record = dict[str, Any]
    _T = TypeVar("_T")
else:
    Record = dict


def now_rfc3339() -> str:
    """The current time in UTC, e.g. ``2026-12-03T18:20:01.123456Z``."""
    from datetime import datetime, timezone  # writers only

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Registry:
    """The two registry files in ``directory`` (by default Aetherflow's own)."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.directory = directory if directory is not None else registry_dir()
        self.spawns_path = self.directory / SPAWNS_FILE
        self.sessions_path = self.directory / SESSIONS_FILE
        self.lock_timeout = lock_timeout

    # Reading. Writers replace files atomically, so no lock is needed here.

    def spawns(self) -> list[Record]:
        """Every record in ``remote_spawns.json``, in file order, ours or not."""
        records: list[Record] = _load(self.spawns_path)["records"]
        return records

    def sessions(self) -> list[Record]:
        """Every record in ``sessions.json``, in file order, ours or not."""
        records: list[Record] = _load(self.sessions_path)["records"]
        return records

    def get_spawn(self, spawn_id: str) -> Record | None:
        return _find(self.spawns(), "spawn_id", spawn_id)

    def find_by_request_id(self, request_id: str) -> Record | None:
        return _find(self.spawns(), "request_id", request_id)

    # Writing: each call is one locked read-modify-write of one file.

    def create_spawn(
        self,
        *,
        provider: str,
        sandbox: str,
        request_id: str | None = None,
        af_remote: dict[str, Any] | None = None,
    ) -> Record:
        """Record a new spawn in state ``requested``.

        When a spawn with ``request_id`` already exists it is returned unchanged. The
        check and the insert happen under one lock, so concurrent callers with the
        same key all get the same spawn.
        """

        def create(records: list[Record]) -> Record:
            if request_id is not None:
                existing = _find(records, "request_id", request_id)
                if existing is not None:
                    return existing
            taken = {record.get("spawn_id") for record in records}
            spawn_id = _new_spawn_id()
            while spawn_id in taken:
                spawn_id = _new_spawn_id()
            now = now_rfc3339()
            spawn: Record = {
                "spawn_id": spawn_id,
                "provider": provider,
                "request_id": request_id,
                "provider_sandbox_id": sandbox,
                "provider_operation_id": None,
                "server_ref": None,
                "session_id": None,
                "state": "requested",
                "last_error": None,
                "created_at": now,
                "updated_at": now,
                "af_remote": dict(af_remote or {}),
            }
            records.append(spawn)
            return spawn

        return self._update_file(self.spawns_path, create)

    def update_spawn(self, spawn_id: str, **fields: Any) -> Record:
        """Set ``fields`` on a spawn and refresh its ``updated_at``.

        ``af_remote`` is merged into the spawn's existing extras rather than replacing
        them; ``last_error`` is redacted before it is stored.
        """
        unknown = sorted(set(fields) - _UPDATABLE_SPAWN_FIELDS)
        if unknown:
            raise TypeError(
                f"update_spawn() got unexpected fields: {', '.join(unknown)}"
            )
        state = fields.get("state")
        if "state" in fields and state not in SPAWN_STATES:
            raise ValueError(f"unknown spawn state {state!r}")
        if fields.get("last_error") is not None:
            fields["last_error"] = redact(str(fields["last_error"]))
        extras = fields.pop("af_remote", None)

        def update(records: list[Record]) -> Record:
            spawn = _find(records, "spawn_id", spawn_id)
            if spawn is None:
                raise RegistryError(
                    f"spawn {spawn_id} is no longer in {self.spawns_path}",
                    hint="another program removed it",
                )
            spawn.update(fields)
            if extras is not None:
                spawn["af_remote"] = _merged_extras(spawn, extras)
            spawn["updated_at"] = now_rfc3339()
            return spawn

        return self._update_file(self.spawns_path, update)

    def upsert_session(
        self,
        *,
        session_id: str,
        server_ref: str | None,
        directory: str,
        project: str,
        work_ref: str,
        status: str = "active",
        af_remote: dict[str, Any] | None = None,
    ) -> Record:
        """Create or refresh the session record of a spawn, keyed by ``session_id``."""
        _check_session_status(status)

        def upsert(records: list[Record]) -> Record:
            now = now_rfc3339()
            session = _find(records, "session_id", session_id)
            if session is None:
                session = {"session_id": session_id, "created_at": now}
                records.append(session)
            session.update(
                {
                    "server_ref": server_ref,
                    "directory": directory,
                    "project": project,
                    "origin_type": "spawn",
                    "work_ref": work_ref,
                    "status": status,
                    "last_seen_at": now,
                    "updated_at": now,
                }
            )
            # created_at is kept on refresh; a record another writer left without it
            # gets one now.
            session.setdefault("created_at", now)
            session["af_remote"] = _merged_extras(session, af_remote or {})
            return session

        return self._update_file(self.sessions_path, upsert)

    def set_session_status(self, session_id: str, status: str) -> Record | None:
        """Change a session's status; ``None`` when there is no such session."""
        _check_session_status(status)

        def set_status(records: list[Record]) -> Record | None:
            session = _find(records, "session_id", session_id)
            if session is not None:
                session["status"] = status
                session["updated_at"] = now_rfc3339()
            return session

        return self._update_file(self.sessions_path, set_status)

    def _update_file(self, path: Path, change: Callable[[list[Record]], _T]) -> _T:
        """Apply ``change`` to the records of ``path`` under the file's lock.

        ``change`` edits the list in place and returns the caller's result. The file
        is rewritten only when the records actually changed.
        """
        ensure_private_dir(self.directory)
        with _exclusive_lock(_lock_path(path), self.lock_timeout):
            document = _load(path)
            import copy

            before = copy.deepcopy(document)
            result = change(document["records"])
            if document != before:
                _write_atomically(path, document)
        return result


def _find(records: list[Record], key: str, value: str) -> Record | None:
    for record in records:
        if record.get(key) == value:
            return record
    return None


def _merged_extras(record: Record, extras: dict[str, Any]) -> dict[str, Any]:
    # Another writer may have dropped or replaced our extras; start afresh then.
    current = record.get("af_remote")
    merged = dict(current) if isinstance(current, dict) else {}
    merged.update(extras)
    return merged


def _check_session_status(status: str) -> None:
    if status not in SESSION_STATUSES:
        raise ValueError(f"unknown session status {status!r}")


def _new_spawn_id() -> str:
    milliseconds = time.time_ns() // 1_000_000
    random_part = int.from_bytes(os.urandom(3), "big") >> (24 - _ID_RANDOM_BITS)
    value = (milliseconds << _ID_RANDOM_BITS) | random_part
    characters = []
    for _ in range(_ID_LENGTH):
        characters.append(_ID_ALPHABET[value & 31])
        value >>= 5
    return "spw_" + "".join(reversed(characters))


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, timeout: float) -> Iterator[None]:
    # The lock file is never removed: a writer that unlinked it could let the next
    # one lock a fresh inode while a third still holds the old one.
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise RegistryError(f"cannot open {lock_path}: {error.strerror}") from error
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RegistryError(
                        f"{lock_path} is still locked by another writer "
                        f"after {timeout:g} s",
                        hint="is an af or af-remote command stuck? try again",
                    ) from None
                time.sleep(_LOCK_POLL_INTERVAL)
        yield
    finally:
        os.close(descriptor)  # also releases the lock


def _load(path: Path) -> dict[str, Any]:
    """The parsed document of ``path``; a missing file is an empty one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"schema_version": SCHEMA_VERSION, "records": []}
    except OSError as error:
        raise RegistryError(f"cannot read {path}: {error.strerror}") from error
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as error:  # also covers bytes that are not UTF-8
        raise RegistryError(
            f"{path} is not valid JSON: {error}", hint=_LEFT_AS_IS
        ) from None
    _check_shape(path, document)
    checked: dict[str, Any] = document
    return checked


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; other writers' parsers would refuse the file.
    raise ValueError(f"{name} is not a JSON value")


def _check_shape(path: Path, document: Any) -> None:
    def wrong_shape(what: str) -> RegistryError:
        return RegistryError(f"{path} has the wrong shape: {what}", hint=_LEFT_AS_IS)

    if not isinstance(document, dict):
        raise wrong_shape("the top level is not a JSON object")
    version = document.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise wrong_shape('"schema_version" is missing or not an integer')
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"{path} has schema_version {version}, newer than the {SCHEMA_VERSION} "
            "this af-remote understands",
            hint=f"upgrade af-remote; {_LEFT_AS_IS}",
        )
    if version < 1:
        raise wrong_shape(f'"schema_version" {version} is not a valid version')
    records = document.get("records")
    if not isinstance(records, list):
        raise wrong_shape('"records" is missing or not a list')
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise wrong_shape(f"record {index} is not a JSON object")


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    import tempfile  # only writers need it; `ls` reads

    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    try:
        descriptor, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(descriptor, "wb") as temp:
                os.fchmod(temp.fileno(), 0o600)
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        _fsync_directory(path.parent)
    except OSError as error:
        raise RegistryError(f"cannot write {path}: {error.strerror}") from error


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable, not only the new file's contents.
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
