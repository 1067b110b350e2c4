"""The Aetherflow registry: shapes on disk, sharing with other writers, bad files,
idempotency, locking across processes, and redaction."""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from af_remote import redact
from af_remote.errors import RegistryError
from af_remote.records import SPAWN_STATES, Registry, now_rfc3339

TESTS = Path(__file__).resolve().parent
GLUE = TESTS.parent / "glue"
WRITER = TESTS / "records_writer.py"

SPAWN_ID = re.compile(r"spw_[0-9a-z]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
SECRET = "sk-ant-api03-very-secret-value"

# Records as another writer (af itself, or a newer af-remote) might leave them: keys
# we do not know, values of every JSON type, and none of our fields.
FOREIGN_SPAWN = {
    "id": "rsp_01",
    "provider": "modal",
    "state": "running",
    "labels": {"team": "zürich", "tags": ["a", "b"]},
    "attempts": 12345678901234567890,
    "ratio": 0.125,
    "done": False,
    "note": None,
}
FOREIGN_SESSION = {
    "session_id": "ses_local_1",
    "origin_type": "local",
    "directory": "/home/user/other",
    "pane": {"tmux": "%3"},
}


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return config


@pytest.fixture
def directory(isolated_config: Path) -> Path:
    return isolated_config / "aetherflow" / "sessions"


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def secret() -> Iterator[str]:
    redact.add_secret(SECRET)
    yield SECRET
    redact.clear()


def read_document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_bytes())
    return document


def write_document(path: Path, records: list[dict[str, Any]], **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema_version": 1, "records": records, **extra}
    path.write_text(json.dumps(document))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def parse_timestamp(value: str) -> datetime:
    assert TIMESTAMP.fullmatch(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc
    )


# Shapes on disk


def test_missing_files_read_as_empty_and_create_nothing(
    registry: Registry, directory: Path
) -> None:
    assert registry.spawns() == []
    assert registry.sessions() == []
    assert registry.get_spawn("spw_000000000000") is None
    assert not directory.exists()


def test_default_directory_follows_xdg_config_home(
    registry: Registry, directory: Path
) -> None:
    assert registry.spawns_path == directory / "remote_spawns.json"
    assert registry.sessions_path == directory / "sessions.json"


def test_new_spawn_on_disk(registry: Registry, directory: Path) -> None:
    before = datetime.now(timezone.utc)
    spawn = registry.create_spawn(
        provider="sprites",
        sandbox="af-my-project",
        request_id="req-1",
        af_remote={"org": "acme", "server_port": 8080},
    )

    document = read_document(directory / "remote_spawns.json")
    assert document == {"schema_version": 1, "records": [spawn]}
    assert SPAWN_ID.fullmatch(spawn["spawn_id"])
    assert spawn == {
        "spawn_id": spawn["spawn_id"],
        "provider": "sprites",
        "request_id": "req-1",
        "provider_sandbox_id": "af-my-project",
        "provider_operation_id": None,
        "server_ref": None,
        "session_id": None,
        "state": "requested",
        "last_error": None,
        "created_at": spawn["created_at"],
        "updated_at": spawn["created_at"],
        "af_remote": {"org": "acme", "server_port": 8080},
    }
    created = parse_timestamp(spawn["created_at"])
    assert before - timedelta(seconds=1) <= created
    assert created <= datetime.now(timezone.utc) + timedelta(seconds=1)


def test_files_are_private_and_no_temp_files_remain(
    registry: Registry, directory: Path
) -> None:
    spawn = registry.create_spawn(provider="local", sandbox="sb")
    registry.update_spawn(spawn["spawn_id"], state="spawning")
    registry.upsert_session(
        session_id="ses_1",
        server_ref=None,
        directory="/w",
        project="p",
        work_ref=spawn["spawn_id"],
    )

    assert mode(directory) == 0o700
    assert mode(directory / "remote_spawns.json") == 0o600
    assert mode(directory / "sessions.json") == 0o600
    assert sorted(os.listdir(directory)) == [
        "remote_spawns.json",
        "remote_spawns.json.lock",
        "sessions.json",
        "sessions.json.lock",
    ]


def test_a_file_another_writer_left_readable_becomes_private(
    registry: Registry, directory: Path
) -> None:
    path = directory / "remote_spawns.json"
    write_document(path, [FOREIGN_SPAWN])
    path.chmod(0o644)

    registry.create_spawn(provider="local", sandbox="sb")

    assert mode(path) == 0o600


def test_each_write_replaces_the_file(registry: Registry, directory: Path) -> None:
    # Readers rely on whole-file replacement: a new inode each time, never an
    # in-place rewrite they could catch half done.
    spawn = registry.create_spawn(provider="local", sandbox="sb")
    path = directory / "remote_spawns.json"
    inode = path.stat().st_ino

    registry.update_spawn(spawn["spawn_id"], state="spawning")

    assert path.stat().st_ino != inode


def test_spawn_ids_are_unique_and_sort_by_creation(registry: Registry) -> None:
    spawn_ids = [
        registry.create_spawn(provider="local", sandbox="sb")["spawn_id"]
        for _ in range(40)
    ]

    assert len(set(spawn_ids)) == len(spawn_ids)
    assert all(SPAWN_ID.fullmatch(spawn_id) for spawn_id in spawn_ids)
    # After "spw_", eight characters count milliseconds in steps of four.
    prefixes = [spawn_id[:12] for spawn_id in spawn_ids]
    assert prefixes == sorted(prefixes)


def test_now_rfc3339_is_utc_now() -> None:
    stamp = parse_timestamp(now_rfc3339())
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(seconds=5)


# Updating spawns


def test_update_spawn_sets_fields_and_merges_extras(registry: Registry) -> None:
    spawn = registry.create_spawn(
        provider="sprites", sandbox="sb", af_remote={"org": "acme", "title": "t"}
    )
    time.sleep(0.002)  # so that updated_at can differ from created_at

    updated = registry.update_spawn(
        spawn["spawn_id"],
        state="running",
        session_id="ses_9",
        server_ref="https://sb.sprites.app",
        af_remote={"server_port": 8080, "title": "new"},
    )

    assert registry.get_spawn(spawn["spawn_id"]) == updated
    assert updated["state"] == "running"
    assert updated["session_id"] == "ses_9"
    assert updated["server_ref"] == "https://sb.sprites.app"
    assert updated["af_remote"] == {"org": "acme", "title": "new", "server_port": 8080}
    assert updated["created_at"] == spawn["created_at"]
    assert parse_timestamp(updated["updated_at"]) > parse_timestamp(spawn["updated_at"])


@pytest.mark.parametrize("state", SPAWN_STATES)
def test_every_documented_state_is_accepted(registry: Registry, state: str) -> None:
    spawn = registry.create_spawn(provider="local", sandbox="sb")
    assert registry.update_spawn(spawn["spawn_id"], state=state)["state"] == state


def test_update_spawn_refuses_unknown_states_and_fields(
    registry: Registry, directory: Path
) -> None:
    spawn = registry.create_spawn(provider="local", sandbox="sb")
    before = (directory / "remote_spawns.json").read_bytes()

    with pytest.raises(ValueError, match="'booting'"):
        registry.update_spawn(spawn["spawn_id"], state="booting")
    with pytest.raises(TypeError, match="sesion_id"):
        registry.update_spawn(spawn["spawn_id"], sesion_id="ses_1")

    assert (directory / "remote_spawns.json").read_bytes() == before


def test_update_of_a_spawn_someone_removed_is_an_error(
    registry: Registry, directory: Path
) -> None:
    spawn = registry.create_spawn(provider="local", sandbox="sb")
    write_document(directory / "remote_spawns.json", [FOREIGN_SPAWN])

    with pytest.raises(RegistryError, match=spawn["spawn_id"]):
        registry.update_spawn(spawn["spawn_id"], state="running")

    assert registry.spawns() == [FOREIGN_SPAWN]


def test_last_error_is_redacted(
    registry: Registry, directory: Path, secret: str
) -> None:
    spawn = registry.create_spawn(provider="sprites", sandbox="sb")

    updated = registry.update_spawn(
        spawn["spawn_id"],
        state="failed",
        last_error=f"bootstrap failed: ANTHROPIC_API_KEY={secret} rejected",
    )

    assert updated["last_error"] == (
        f"bootstrap failed: ANTHROPIC_API_KEY={redact.MASK} rejected"
    )
    assert secret.encode() not in (directory / "remote_spawns.json").read_bytes()
    assert (
        registry.update_spawn(spawn["spawn_id"], last_error=None)["last_error"] is None
    )


# Idempotency


def test_same_request_id_returns_the_same_spawn(
    registry: Registry, directory: Path
) -> None:
    first = registry.create_spawn(provider="sprites", sandbox="sb", request_id="k1")
    inode = (directory / "remote_spawns.json").stat().st_ino

    again = registry.create_spawn(provider="sprites", sandbox="other", request_id="k1")

    assert again == first
    assert registry.spawns() == [first]
    # Nothing changed, so the file was not rewritten.
    assert (directory / "remote_spawns.json").stat().st_ino == inode
    assert registry.find_by_request_id("k1") == first


def test_different_or_no_request_ids_create_new_spawns(registry: Registry) -> None:
    first = registry.create_spawn(provider="sprites", sandbox="sb", request_id="k1")
    second = registry.create_spawn(provider="sprites", sandbox="sb", request_id="k2")
    third = registry.create_spawn(provider="sprites", sandbox="sb")
    fourth = registry.create_spawn(provider="sprites", sandbox="sb")

    spawn_ids = {s["spawn_id"] for s in (first, second, third, fourth)}
    assert len(spawn_ids) == 4
    assert registry.find_by_request_id("k2") == second
    assert registry.find_by_request_id("k3") is None


# Sessions


def test_upsert_session_creates_then_refreshes(
    registry: Registry, directory: Path
) -> None:
    created = registry.upsert_session(
        session_id="ses_1",
        server_ref="http://127.0.0.1:4096",
        directory="/work/a",
        project="a",
        work_ref="spw_aaaaaaaaaaaa",
        af_remote={"render": ".af-remote/local"},
    )
    assert created == {
        "session_id": "ses_1",
        "created_at": created["created_at"],
        "server_ref": "http://127.0.0.1:4096",
        "directory": "/work/a",
        "project": "a",
        "origin_type": "spawn",
        "work_ref": "spw_aaaaaaaaaaaa",
        "status": "active",
        "last_seen_at": created["created_at"],
        "updated_at": created["created_at"],
        "af_remote": {"render": ".af-remote/local"},
    }
    time.sleep(0.002)

    refreshed = registry.upsert_session(
        session_id="ses_1",
        server_ref="http://127.0.0.1:5000",
        directory="/work/a",
        project="a",
        work_ref="spw_aaaaaaaaaaaa",
        af_remote={"server_port": 5000},
    )

    assert registry.sessions() == [refreshed]
    assert refreshed["created_at"] == created["created_at"]
    assert parse_timestamp(refreshed["last_seen_at"]) > parse_timestamp(
        created["last_seen_at"]
    )
    assert refreshed["updated_at"] == refreshed["last_seen_at"]
    assert refreshed["server_ref"] == "http://127.0.0.1:5000"
    assert refreshed["af_remote"] == {
        "render": ".af-remote/local",
        "server_port": 5000,
    }
    assert read_document(directory / "sessions.json")["schema_version"] == 1


def test_set_session_status(registry: Registry, directory: Path) -> None:
    registry.upsert_session(
        session_id="ses_1", server_ref=None, directory="/w", project="p", work_ref="s"
    )

    ended = registry.set_session_status("ses_1", "terminated")

    assert ended is not None
    assert ended["status"] == "terminated"
    assert registry.sessions() == [ended]
    before = (directory / "sessions.json").read_bytes()
    assert registry.set_session_status("ses_unknown", "terminated") is None
    assert (directory / "sessions.json").read_bytes() == before
    with pytest.raises(ValueError, match="'paused'"):
        registry.set_session_status("ses_1", "paused")


# Other writers


def test_other_writers_records_and_keys_survive_our_writes(
    registry: Registry, directory: Path
) -> None:
    ours_spawn = {
        "spawn_id": "spw_0123456789ab",
        "provider": "sprites",
        "state": "requested",
        "x_af_priority": 3,  # a key a newer writer added to our record
    }
    ours_session = {"session_id": "ses_ours", "status": "active", "x_af_pin": True}
    write_document(
        directory / "remote_spawns.json",
        [FOREIGN_SPAWN, ours_spawn],
        x_af_index={"rev": 7},
    )
    write_document(directory / "sessions.json", [ours_session, FOREIGN_SESSION])

    registry.create_spawn(provider="sprites", sandbox="sb", request_id="k")
    registry.update_spawn("spw_0123456789ab", state="running", af_remote={"a": 1})
    registry.upsert_session(
        session_id="ses_ours",
        server_ref=None,
        directory="/w",
        project="p",
        work_ref="spw_0123456789ab",
    )
    registry.upsert_session(
        session_id="ses_new", server_ref=None, directory="/w", project="p", work_ref="s"
    )
    registry.set_session_status("ses_ours", "terminated")

    spawns_document = read_document(directory / "remote_spawns.json")
    assert spawns_document["x_af_index"] == {"rev": 7}
    spawns = spawns_document["records"]
    assert len(spawns) == 3
    assert spawns[0] == FOREIGN_SPAWN
    assert spawns[1]["x_af_priority"] == 3
    assert spawns[1]["state"] == "running"
    # The record had lost its extras (another writer dropped them); merging starts
    # a fresh dict rather than failing.
    assert spawns[1]["af_remote"] == {"a": 1}
    assert spawns[2]["request_id"] == "k"

    sessions = read_document(directory / "sessions.json")["records"]
    assert [s["session_id"] for s in sessions] == ["ses_ours", "ses_local_1", "ses_new"]
    assert sessions[0]["x_af_pin"] is True
    assert sessions[0]["status"] == "terminated"
    assert sessions[1] == FOREIGN_SESSION


def test_records_without_our_fields_are_tolerated(
    registry: Registry, directory: Path
) -> None:
    write_document(
        directory / "remote_spawns.json",
        [FOREIGN_SPAWN, {"spawn_id": "spw_bare00000000", "state": "running"}],
    )

    bare = registry.get_spawn("spw_bare00000000")
    assert bare == {"spawn_id": "spw_bare00000000", "state": "running"}
    assert registry.find_by_request_id("anything") is None
    created = registry.create_spawn(provider="local", sandbox="sb", request_id="r")
    assert registry.spawns()[-1] == created


# Files we cannot use

BAD_FILES = [
    pytest.param(
        b'{"schema_version": 2, "records": []}', "schema_version 2", id="newer-schema"
    ),
    pytest.param(b'{"schema_version": 1, "records": [', "not valid JSON", id="cut"),
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b"\x80\x81 not text", "not valid JSON", id="not-utf8"),
    pytest.param(
        b'{"schema_version": 1, "records": [{"n": NaN}]}', "not valid JSON", id="nan"
    ),
    pytest.param(b"[]", "wrong shape", id="top-level-list"),
    pytest.param(b'{"records": []}', "wrong shape", id="no-schema-version"),
    pytest.param(
        b'{"schema_version": "1", "records": []}', "wrong shape", id="version-text"
    ),
    pytest.param(b'{"schema_version": 0, "records": []}', "wrong shape", id="zero"),
    pytest.param(b'{"schema_version": 1}', "wrong shape", id="no-records"),
    pytest.param(
        b'{"schema_version": 1, "records": {}}', "wrong shape", id="records-object"
    ),
    pytest.param(
        b'{"schema_version": 1, "records": [{}, 1]}', "wrong shape", id="record-number"
    ),
]


@pytest.mark.parametrize(("content", "problem"), BAD_FILES)
def test_unusable_spawns_file_is_an_error_and_left_alone(
    registry: Registry, directory: Path, content: bytes, problem: str
) -> None:
    path = directory / "remote_spawns.json"
    directory.mkdir(parents=True)
    path.write_bytes(content)
    operations: list[Callable[[], object]] = [
        registry.spawns,
        lambda: registry.get_spawn("spw_0123456789ab"),
        lambda: registry.find_by_request_id("k"),
        lambda: registry.create_spawn(provider="local", sandbox="sb"),
        lambda: registry.create_spawn(provider="local", sandbox="sb", request_id="k"),
        lambda: registry.update_spawn("spw_0123456789ab", state="running"),
    ]

    for operation in operations:
        with pytest.raises(RegistryError) as caught:
            operation()
        assert str(path) in str(caught.value)
        assert problem in str(caught.value)

    assert path.read_bytes() == content
    assert sorted(os.listdir(directory)) == [
        "remote_spawns.json",
        "remote_spawns.json.lock",
    ]


@pytest.mark.parametrize(("content", "problem"), BAD_FILES)
def test_unusable_sessions_file_is_an_error_and_left_alone(
    registry: Registry, directory: Path, content: bytes, problem: str
) -> None:
    path = directory / "sessions.json"
    directory.mkdir(parents=True)
    path.write_bytes(content)
    operations: list[Callable[[], object]] = [
        registry.sessions,
        lambda: registry.upsert_session(
            session_id="s", server_ref=None, directory="/w", project="p", work_ref="w"
        ),
        lambda: registry.set_session_status("s", "terminated"),
    ]

    for operation in operations:
        with pytest.raises(RegistryError) as caught:
            operation()
        assert str(path) in str(caught.value)
        assert problem in str(caught.value)

    assert path.read_bytes() == content
    assert sorted(os.listdir(directory)) == ["sessions.json", "sessions.json.lock"]


# Locking


def hold_lock(path: Path) -> int:
    # flock locks belong to an open file description, so this conflicts with the
    # registry's own open() of the same lock file even within one process.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


def test_a_lock_held_too_long_is_an_error_naming_the_lock(directory: Path) -> None:
    directory.mkdir(parents=True)
    lock = directory / "remote_spawns.json.lock"
    descriptor = hold_lock(lock)
    registry = Registry(lock_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=re.escape(str(lock))):
            registry.create_spawn(provider="local", sandbox="sb")
        assert time.monotonic() - started >= 0.3
        assert not (directory / "remote_spawns.json").exists()
        # Reading never waits for writers.
        assert registry.spawns() == []
    finally:
        os.close(descriptor)

    assert registry.create_spawn(provider="local", sandbox="sb")["state"] == "requested"


# Another writer in its own process: takes the lock, holds it until told, then does
# its own read-modify-write and lets go, like af would.
LOCK_HOLDER = r"""
import fcntl, json, os, sys
path = sys.argv[1]
with open(path + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
    with open(path) as current:
        document = json.load(current)
    document["records"].append({"session_id": "ses_af_held", "origin_type": "local"})
    with open(path + ".af-new", "w") as new:
        json.dump(document, new)
    os.replace(path + ".af-new", path)
"""

WORKERS = 32
SPAWNS_PER_WORKER = 3


def check_whole_file(path: Path) -> int:
    """Read ``path`` the way any reader would; a partial file fails the test."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    document = json.loads(raw)
    assert document["schema_version"] == 1
    assert isinstance(document["records"], list)
    return 1


def request_ids_on_disk(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {r.get("request_id") for r in read_document(path)["records"]}


def test_concurrent_writers_lose_nothing(tmp_path: Path, directory: Path) -> None:
    spawns_path = directory / "remote_spawns.json"
    sessions_path = directory / "sessions.json"
    write_document(spawns_path, [FOREIGN_SPAWN])
    write_document(sessions_path, [FOREIGN_SESSION])
    sessions_seed = sessions_path.read_bytes()
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(GLUE), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    go = tmp_path / "go"
    first_spawns = {f"w{worker}-0" for worker in range(WORKERS)}
    processes: list[subprocess.Popen[str]] = []
    reads = 0

    try:
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(sessions_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        processes.append(holder)
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(WRITER),
                    str(worker),
                    str(SPAWNS_PER_WORKER),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            for worker in range(WORKERS)
        ]
        processes.extend(writers)
        go.touch()

        # Every writer records a spawn and then wants sessions.json, which the
        # holder has locked: no writer can finish, and that file must not move,
        # until the holder lets go.
        deadline = time.monotonic() + 60
        while missing := first_spawns - request_ids_on_disk(spawns_path):
            reads += check_whole_file(spawns_path) + check_whole_file(sessions_path)
            assert time.monotonic() < deadline, f"spawns never recorded: {missing}"
            if all(writer.poll() is not None for writer in writers):
                break
        assert sessions_path.read_bytes() == sessions_seed
        assert first_spawns <= request_ids_on_disk(spawns_path)
        holder.stdin.write("release\n")
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0

        deadline = time.monotonic() + 120
        while any(writer.poll() is None for writer in writers):
            reads += check_whole_file(spawns_path) + check_whole_file(sessions_path)
            assert time.monotonic() < deadline, "writers did not finish"
        results = []
        for writer in writers:
            stdout, stderr = writer.communicate()
            assert writer.returncode == 0, stderr
            results.append(json.loads(stdout))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert reads > 0
    spawns = Registry().spawns()
    sessions = Registry().sessions()

    assert spawns[0] == FOREIGN_SPAWN
    shared = [s for s in spawns if s.get("request_id") == "shared-request"]
    assert len(shared) == 1
    assert {result["shared"] for result in results} == {shared[0]["spawn_id"]}
    by_request = {s.get("request_id"): s for s in spawns}
    for worker, result in enumerate(results):
        for index, spawn_id in enumerate(result["spawns"]):
            spawn = by_request[f"w{worker}-{index}"]
            assert spawn["spawn_id"] == spawn_id
            assert spawn["state"] == "running"
            assert spawn["session_id"] == f"ses_w{worker}_{index}"
            assert spawn["af_remote"] == {
                "worker": worker,
                "index": index,
                "server_port": 4096 + worker,
            }
    assert len(spawns) == 2 + WORKERS * SPAWNS_PER_WORKER
    assert len({s.get("spawn_id") for s in spawns}) == len(spawns)

    assert sessions[0] == FOREIGN_SESSION
    assert {"session_id": "ses_af_held", "origin_type": "local"} in sessions
    ours = {s["session_id"]: s for s in sessions if s.get("origin_type") == "spawn"}
    assert len(ours) == WORKERS * SPAWNS_PER_WORKER
    assert len(sessions) == 2 + len(ours)
    for spawn in spawns[1:]:
        if spawn["request_id"] != "shared-request":
            assert ours[spawn["session_id"]]["work_ref"] == spawn["spawn_id"]

    for path in (spawns_path, sessions_path):
        assert read_document(path)["schema_version"] == 1
        assert mode(path) == 0o600
    assert sorted(os.listdir(directory)) == [
        "remote_spawns.json",
        "remote_spawns.json.lock",
        "sessions.json",
        "sessions.json.lock",
    ]
