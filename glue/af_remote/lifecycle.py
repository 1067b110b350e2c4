"""``status`` and ``down``: ask a spawn's sandbox and server, stop or destroy it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from af_remote import config, listing, native, project, redact, ui
from af_remote.errors import AfRemoteError
from af_remote.local import LocalSandbox
from af_remote.protocol import BootstrapReport
from af_remote.records import Record, Registry
from af_remote.sprites import ROOT as SPRITE_ROOT
from af_remote.sprites import Sprite, is_not_found

KEEPALIVE_TASK = "af-keepalive"


def _project_root() -> Any:
    try:
        return project.root()
    except OSError:
        return None


def sprite_of(spawn: Record) -> Sprite:
    return Sprite(
        str(spawn.get("provider_sandbox_id")), listing.extras(spawn).get("org")
    )


def password_for(spawn: Record) -> str:
    """The server password: the local 0600 file, else fetched once from the sprite."""
    provider = str(spawn.get("provider"))
    org = listing.extras(spawn).get("org")
    sandbox = str(spawn.get("provider_sandbox_id"))
    path = config.password_path(provider, org, sandbox)
    if path.is_file():
        return config.server_password(provider, org, sandbox)
    if provider != "sprites":
        raise AfRemoteError(f"the server password file {path} is missing")
    ui.progress(f"fetching the server password from sprite {sandbox} (once)")
    password = sprite_of(spawn).fetch_password()
    config.store_password(provider, org, sandbox, password)
    return password


def mask_password(spawn: Record) -> None:
    """Register the sandbox's password for redaction when this machine has it: the
    sandbox's answers may quote it even to a command that does not use it."""
    path = config.password_path(
        str(spawn.get("provider")),
        listing.extras(spawn).get("org"),
        str(spawn.get("provider_sandbox_id")),
    )
    # None here: nothing of it to leak either.
    with contextlib.suppress(OSError):
        redact.add_secret(path.read_text(encoding="utf-8").strip())


# --- status -----------------------------------------------------------------------


def status(reference: str | None, *, provider: str | None, as_json: bool) -> int:
    spawn = listing.resolve(reference, project_root=_project_root(), provider=provider)
    mask_password(spawn)
    if spawn.get("provider") == "sprites":
        report = _sprite_status(spawn)
    else:
        report = _local_status(spawn)
    if as_json:
        ui.out_json(report)
        return 0
    _print_status(report)
    return 0


def _local_status(spawn: Record) -> dict[str, Any]:
    sandbox = LocalSandbox(str(spawn.get("provider_sandbox_id")))
    exists = sandbox.exists()
    running = exists and sandbox.server_running()
    port = sandbox.server_port() if running else None
    report = _empty_report(spawn, exists=exists)
    report["commands"] = [
        native.display(sandbox.serve_argv("status")),
        f"tail -n 50 {sandbox.directory}/run/opencode.log",
    ]
    if port is None:
        return report
    from af_remote.opencode import Server

    try:
        with Server(f"http://127.0.0.1:{port}", password_for(spawn)) as server:
            health = server.health()
            statuses = server.session_status(listing.extras(spawn).get("workdir"))
    except AfRemoteError as error:
        report["server"]["error"] = str(error)
        return report
    report["server"] = {"healthy": bool(health.get("healthy")), **health}
    report["session"] = _session_state(spawn, statuses)
    return report


def _sprite_status(spawn: Record) -> dict[str, Any]:
    sprite = sprite_of(spawn)
    port = int(listing.extras(spawn).get("server_port") or 8080)
    result = sprite.exec(["bash", f"{SPRITE_ROOT}/bin/status.sh", str(port)])
    answer = BootstrapReport()
    for line in result.stdout.splitlines():
        answer.feed(line)
    exists = not is_not_found(result)
    report = _empty_report(spawn, exists=exists)
    report["commands"] = [
        native.display(sprite.console_argv()),
        native.display(
            sprite.exec_argv(
                ["tail", "-n", "50", "/.sprite/logs/services/opencode.log"]
            )
        ),
        native.display(sprite.exec_argv(["sprite-env", "services", "list"])),
    ]
    data = answer.result
    if data is None:
        report["sandbox"]["error"] = (result.stderr or result.stdout).strip()[-300:]
        return report
    health = data.get("health")
    if isinstance(health, dict):
        report["server"] = {"healthy": bool(health.get("healthy")), **health}
    sessions = data.get("sessions") or {}
    workdir = listing.extras(spawn).get("workdir")
    statuses = sessions.get(workdir) if isinstance(sessions, dict) else None
    if isinstance(statuses, dict):
        report["session"] = _session_state(spawn, statuses)
    tasks = (data.get("tasks") or {}).get("tasks") if data.get("tasks") else None
    hold = next(
        (task for task in tasks or [] if task.get("name") == KEEPALIVE_TASK), None
    )
    services = data.get("services")
    names = (
        {service.get("name") for service in services if isinstance(service, dict)}
        if isinstance(services, list)
        else set()
    )
    report["keepalive"] = {
        "enabled": KEEPALIVE_TASK in names,
        "holding": hold is not None,
        "expires_at": hold.get("expires_at") if hold else None,
    }
    report["services"] = services
    return report


def _empty_report(spawn: Record, *, exists: bool) -> dict[str, Any]:
    return {
        "spawn": listing.summary(spawn),
        "sandbox": {"name": spawn.get("provider_sandbox_id"), "exists": exists},
        "server": {"healthy": False},
        "session": {"id": spawn.get("session_id"), "state": "unknown"},
        "keepalive": None,
        "commands": [],
    }


def _session_state(spawn: Record, statuses: dict[str, Any]) -> dict[str, Any]:
    session_id = spawn.get("session_id")
    entry = statuses.get(str(session_id)) if session_id else None
    state = entry.get("type", "busy") if isinstance(entry, dict) else "idle"
    return {"id": session_id, "state": state}


def _print_status(report: dict[str, Any]) -> None:
    spawn, sandbox, server = report["spawn"], report["sandbox"], report["server"]
    ui.out(f"spawn      {spawn['spawn_id']}  ({spawn['state']})")
    if spawn.get("last_error"):
        ui.out(f"last error {spawn['last_error']}")
    ui.out(
        f"sandbox    {sandbox['name']} ({spawn['provider']}): "
        + ("exists" if sandbox["exists"] else "gone")
    )
    if server.get("healthy"):
        ui.out(f"server     healthy, opencode {server.get('version', '?')}")
    else:
        detail = f": {server['error']}" if "error" in server else ""
        ui.out(f"server     not answering{detail}")
    session = report["session"]
    ui.out(f"session    {session['id']}: {session['state']}")
    keepalive = report.get("keepalive")
    if keepalive is not None:
        if not keepalive["enabled"]:
            ui.out("keepalive  off")
        elif keepalive["holding"]:
            ui.out(
                f"keepalive  holding the sprite awake until {keepalive['expires_at']}"
            )
        else:
            ui.out("keepalive  on, not holding (no session busy)")
    ui.out("")
    ui.out("Look further:")
    for command in report["commands"]:
        ui.out(f"  {command}")


# --- down ---------------------------------------------------------------------------


def down(reference: str | None, *, provider: str | None, destroy: bool) -> int:
    registry = Registry()
    spawn = listing.resolve(
        reference, project_root=_project_root(), provider=provider, registry=registry
    )
    mask_password(spawn)
    # down ends by writing sessions.json: an unusable one is found before the
    # sandbox is touched, so the two files cannot end up disagreeing.
    registry.sessions()
    if destroy:
        return _destroy(registry, spawn)
    if spawn.get("state") == "terminated":
        ui.out(f"spawn {spawn['spawn_id']} is already terminated")
        return 0
    with _failure_noted(registry, spawn, "down"):
        _abort(spawn)
    registry.update_spawn(str(spawn["spawn_id"]), state="terminated")
    if spawn.get("session_id"):
        registry.set_session_status(str(spawn["session_id"]), "terminated")
    ui.out(
        f"aborted session {spawn.get('session_id')} of spawn {spawn['spawn_id']}; "
        f"sandbox {spawn.get('provider_sandbox_id')} keeps running "
        "(`af-remote down --destroy` deletes it)"
    )
    return 0


@contextlib.contextmanager
def _failure_noted(registry: Registry, spawn: Record, command: str) -> Iterator[None]:
    """A failed or interrupted abort or destroy leaves the spawn's state as it was
    (nothing is known to have ended) and says what happened in its last_error."""
    spawn_id = str(spawn["spawn_id"])
    try:
        yield
    except KeyboardInterrupt:
        registry.update_spawn(
            spawn_id, last_error=f"`af-remote {command}` was interrupted; run it again"
        )
        raise
    except AfRemoteError as error:
        registry.update_spawn(
            spawn_id, last_error=f"`af-remote {command}` failed: {error}"
        )
        raise


def _abort(spawn: Record) -> None:
    session_id = spawn.get("session_id")
    if not session_id:
        return
    workdir = listing.extras(spawn).get("workdir")
    if spawn.get("provider") == "sprites":
        port = int(listing.extras(spawn).get("server_port") or 8080)
        url = f"http://127.0.0.1:{port}/session/{session_id}/abort"
        if workdir:
            url += f"?directory={workdir}"
        command = [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "30",
            "--config",
            f"{SPRITE_ROOT}/curl.conf",
            "--request",
            "POST",
            url,
        ]
        result = sprite_of(spawn).exec(command)
        if result.returncode != 0 and not is_not_found(result):
            raise native.failure(result, f"could not abort session {session_id}")
        return
    sandbox = LocalSandbox(str(spawn.get("provider_sandbox_id")))
    local_port = sandbox.server_port() if sandbox.server_running() else None
    if local_port is None:
        return  # no server, nothing runs
    from af_remote.opencode import Server

    with Server(f"http://127.0.0.1:{local_port}", password_for(spawn)) as server:
        server.abort(str(session_id), workdir)


def _destroy(registry: Registry, spawn: Record) -> int:
    provider = spawn.get("provider")
    name = str(spawn.get("provider_sandbox_id"))
    with _failure_noted(registry, spawn, "down --destroy"):
        if provider == "sprites":
            existed = sprite_of(spawn).destroy()
        else:
            existed = LocalSandbox(name).destroy()
    org = listing.extras(spawn).get("org")
    # A sandbox made again later gets a new password.
    config.password_path(str(provider), org, name).unlink(missing_ok=True)
    ended = 0
    for record in registry.spawns():
        if (
            record.get("provider") == provider
            and record.get("provider_sandbox_id") == name
            and listing.extras(record).get("org") == org
            and record.get("state") != "terminated"
        ):
            registry.update_spawn(str(record["spawn_id"]), state="terminated")
            if record.get("session_id"):
                registry.set_session_status(str(record["session_id"]), "terminated")
            ended += 1
    what = "destroyed" if existed else "was already gone"
    ui.out(f"sandbox {name} ({provider}) {what}; {ended} spawn(s) marked terminated")
    return 0
