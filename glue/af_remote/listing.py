"""``ls`` and finding a spawn by id: reads the records only, so it starts fast.

Imported by ``ls``; keep it free of copier, httpx, plumbum and dotenv.
"""

from __future__ import annotations

from af_remote import ui
from af_remote.errors import NotReadyError, UsageError
from af_remote.records import Record, Registry

TYPE_CHECKING = False  # typing and pathlib cost `ls` more than it needs them
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

ACTIVE_STATES = ("requested", "spawning", "running", "unknown")


def ls(*, show_all: bool, as_json: bool) -> int:
    spawns = [
        spawn
        for spawn in Registry().spawns()
        if _ours(spawn) and (show_all or spawn.get("state") in ACTIVE_STATES)
    ]
    spawns.sort(key=lambda spawn: str(spawn.get("created_at", "")), reverse=True)
    if as_json:
        ui.out_json({"spawns": [summary(spawn) for spawn in spawns]})
        return 0
    if not spawns:
        hint = "" if show_all else " (--all includes terminated and failed ones)"
        ui.out(f"No spawns{hint}.")
        return 0
    rows = [("SPAWN", "STATE", "PROVIDER", "SANDBOX", "SESSION", "CREATED", "TITLE")]
    for spawn in spawns:
        details = extras(spawn)
        rows.append(
            (
                str(spawn.get("spawn_id")),
                str(spawn.get("state")),
                str(spawn.get("provider")),
                str(spawn.get("provider_sandbox_id")),
                str(spawn.get("session_id") or "-"),
                str(spawn.get("created_at", ""))[:19].replace("T", " "),
                str(details.get("title") or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [
            cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)
        ]
        ui.out("  ".join([*cells, row[-1]]).rstrip())
    return 0


def summary(spawn: Record) -> dict[str, Any]:
    """The documented JSON shape of a spawn (docs/json.md)."""
    details = extras(spawn)
    return {
        "spawn_id": spawn.get("spawn_id"),
        "provider": spawn.get("provider"),
        "sandbox": spawn.get("provider_sandbox_id"),
        "org": details.get("org"),
        "state": spawn.get("state"),
        "session_id": spawn.get("session_id"),
        "server_ref": spawn.get("server_ref"),
        "server_port": details.get("server_port"),
        "workdir": details.get("workdir"),
        "branch": details.get("branch"),
        "title": details.get("title"),
        "project": details.get("project"),
        "request_id": spawn.get("request_id"),
        "last_error": spawn.get("last_error"),
        "created_at": spawn.get("created_at"),
        "updated_at": spawn.get("updated_at"),
    }


def resolve(
    reference: str | None,
    *,
    project_root: Path | None,
    provider: str | None = None,
    registry: Registry | None = None,
    require_running: bool = False,
) -> Record:
    """The spawn a command is about.

    ``reference`` is a spawn id, a session id, or a unique prefix of either. Without
    one: the newest running spawn of ``project_root`` (of ``provider`` if given).
    """
    registry = registry or Registry()
    spawns = [
        spawn
        for spawn in registry.spawns()
        if _ours(spawn) and (provider is None or spawn.get("provider") == provider)
    ]
    if reference:
        exact = [
            spawn
            for spawn in spawns
            if reference in (spawn.get("spawn_id"), spawn.get("session_id"))
        ]
        found = exact or [
            spawn
            for spawn in spawns
            if str(spawn.get("spawn_id", "")).startswith(reference)
            or str(spawn.get("session_id") or "").startswith(reference)
        ]
        if not found:
            raise UsageError(
                f"no spawn or session matches {reference!r}",
                hint="`af-remote ls --all` lists them",
            )
        if len(found) > 1:
            listed = ", ".join(
                f"{spawn.get('spawn_id')} ({spawn.get('session_id') or 'no session'})"
                for spawn in found
            )
            raise UsageError(f"{reference!r} matches {len(found)} spawns: {listed}")
        spawn = found[0]
    else:
        candidates = [
            spawn
            for spawn in spawns
            if project_root is None or extras(spawn).get("project") == str(project_root)
        ]
        running = [s for s in candidates if s.get("state") == "running"]
        # Nothing running yet: name the newest spawn still on its way (exit 3).
        pending = [
            s
            for s in candidates
            if s.get("state") in ("requested", "spawning", "unknown")
        ]
        pool = running or (pending if require_running else candidates)
        if not pool:
            raise UsageError(
                "no running spawn in this project",
                hint='start one with `af-remote up --prompt "..."`, or name one '
                "from `af-remote ls --all`",
            )
        spawn = max(pool, key=lambda s: str(s.get("created_at", "")))
    if require_running and spawn.get("state") != "running":
        state = spawn.get("state")
        if state in ("terminated", "failed"):
            raise UsageError(
                f"spawn {spawn.get('spawn_id')} is {state}"
                + (f": {spawn['last_error']}" if spawn.get("last_error") else ""),
                hint='start a new one with `af-remote up --prompt "..."`',
            )
        raise NotReadyError(
            f"spawn {spawn.get('spawn_id')} is not running yet (state {state})",
            hint="wait for `af-remote up` to finish, or run it again",
        )
    return spawn


def extras(record: Record) -> dict[str, Any]:
    """af-remote's details of a record; {} when another writer dropped them."""
    value = record.get("af_remote")
    return value if isinstance(value, dict) else {}


def _ours(record: Record) -> bool:
    """Records af-remote can act on: a spawn id and a provider it knows."""
    return bool(record.get("spawn_id")) and record.get("provider") in (
        "sprites",
        "local",
    )
