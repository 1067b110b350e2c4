"""``attach``: the OpenCode TUI on a spawn's session, in the user's terminal.

For a sprite, a ``sprite proxy`` forwards a free local port to the server; the TUI
talks to ``http://127.0.0.1:PORT`` with the password in its environment (never in
argv). The proxy lives exactly as long as the TUI: it is stopped when the TUI
exits, is interrupted, or fails to start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from af_remote import lifecycle, listing, native, project, ui
from af_remote.errors import AfRemoteError, NotReadyError
from af_remote.local import LocalSandbox
from af_remote.records import Record

HEALTH_TIMEOUT = 60.0
DEFAULT_VERSION = "1.18.33"


def attach(reference: str | None, *, provider: str | None) -> int:
    try:
        root: Path | None = project.root()
    except OSError:
        root = None
    spawn = listing.resolve(
        reference, project_root=root, provider=provider, require_running=True
    )
    extras = listing.extras(spawn)
    version = str(extras.get("opencode_version") or DEFAULT_VERSION)
    opencode = find_opencode(spawn, version)
    password = lifecycle.password_for(spawn)
    with _endpoint(spawn) as endpoint:
        health = _wait_healthy(endpoint, password)
        _warn_on_version_mismatch(opencode, str(health.get("version", "")))
        argv = [
            str(opencode),
            "attach",
            endpoint.url,
            "--session",
            str(spawn["session_id"]),
        ]
        ui.progress(
            f"attaching to session {spawn['session_id']} (quit the TUI to detach)"
        )
        return _run_foreground(argv, password)


def find_opencode(spawn: Record, version: str) -> Path:
    """The local ``opencode``: on PATH, or the local sandbox's own install."""
    found = shutil.which("opencode")
    if found:
        return Path(found)
    if spawn.get("provider") == "local":
        extras = listing.extras(spawn)
        prefix = extras.get("opencode_prefix") or str(
            LocalSandbox(str(spawn["provider_sandbox_id"])).directory / "opencode"
        )
        candidate = Path(prefix) / "bin" / "opencode"
        if candidate.is_file():
            return candidate
    raise AfRemoteError(
        "opencode is not installed on this machine",
        hint=f"install the server's version: npm install -g opencode-ai@{version}",
    )


@dataclass
class Endpoint:
    """Where the TUI connects, and the proxy serving it (None for local)."""

    url: str
    proxy: subprocess.Popen[bytes] | None = None
    proxy_argv: list[str] = field(default_factory=list)


@contextmanager
def _endpoint(spawn: Record) -> Iterator[Endpoint]:
    extras = listing.extras(spawn)
    if spawn.get("provider") == "local":
        sandbox = LocalSandbox(str(spawn["provider_sandbox_id"]))
        port = sandbox.server_port() if sandbox.server_running() else None
        if port is None:
            raise NotReadyError(
                f"the OpenCode server of local sandbox {sandbox.name} is not running",
                hint="`af-remote up` starts it again",
            )
        yield Endpoint(f"http://127.0.0.1:{port}")
        return
    sprite = lifecycle.sprite_of(spawn)
    local_port = free_port()
    argv = sprite.proxy_argv(local_port, int(extras.get("server_port") or 8080))
    ui.log.info("$ %s", native.display(argv))
    try:
        # Its own session: Ctrl-C in the TUI must not kill the proxy before we do.
        proxy = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise AfRemoteError(
            "`sprite` is not on PATH", hint="install the sprite CLI and log in"
        ) from None
    try:
        yield Endpoint(f"http://127.0.0.1:{local_port}", proxy, argv)
    finally:
        _stop(proxy)


def _wait_healthy(endpoint: Endpoint, password: str) -> dict[str, Any]:
    """Health through the endpoint; through a proxy this also wakes the sprite."""
    from af_remote.opencode import Server

    with Server(endpoint.url, password, timeout=5.0) as server:
        proxy = endpoint.proxy
        if proxy is None:
            return server.wait_healthy(10.0)
        ui.progress("waiting for the server through sprite proxy")
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while True:
            if proxy.poll() is not None:
                output = (
                    proxy.stderr.read().decode(errors="replace") if proxy.stderr else ""
                )
                last = (output.strip().splitlines() or ["no output"])[-1]
                raise AfRemoteError(
                    f"sprite proxy exited with {proxy.returncode}: {last}",
                    hint=f"to see it yourself: {native.display(endpoint.proxy_argv)}",
                )
            remaining = deadline - time.monotonic()
            try:
                return server.wait_healthy(min(2.0, max(0.1, remaining)))
            except AfRemoteError:
                if time.monotonic() >= deadline:
                    raise AfRemoteError(
                        "the server did not answer through the proxy within "
                        f"{HEALTH_TIMEOUT:.0f}s",
                        hint="look at the sprite: `af-remote status`",
                    ) from None


def _run_foreground(argv: list[str], password: str) -> int:
    environment = {**os.environ, "OPENCODE_SERVER_PASSWORD": password}
    ui.log.info("$ %s", native.display(argv))
    with _signals_end_the_tui():
        child = subprocess.Popen(argv, env=environment)
        try:
            status = child.wait()
        except _TerminalGone as gone:
            status = -gone.signum
        finally:
            _stop_tui(child)
    # A TUI ended by a signal reports it the way a shell would.
    return 128 - status if status < 0 else status


class _TerminalGone(Exception):
    """The terminal hung up, or af-remote was told to stop, while the TUI ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_end_the_tui() -> Iterator[None]:
    """While the TUI owns the terminal, signals must not end af-remote abruptly,
    or the proxy (in a session of its own) would outlive it.

    Ctrl-C is the TUI's key: af-remote only survives a stray SIGINT. A handler, not
    SIG_IGN, so that the TUI does not inherit an ignored SIGINT. A hangup (terminal
    closed) or SIGTERM ends the TUI, once, and then the proxy.
    """
    ending: list[int] = []

    def ignore(signum: int, frame: object) -> None:
        pass

    def end(signum: int, frame: object) -> None:
        if not ending:
            ending.append(signum)
            raise _TerminalGone(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, ignore),
        signal.SIGHUP: signal.signal(signal.SIGHUP, end),
        signal.SIGTERM: signal.signal(signal.SIGTERM, end),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_tui(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _warn_on_version_mismatch(opencode: Path, server_version: str) -> None:
    local_version = _installed_version(opencode)
    if local_version and server_version and local_version != server_version:
        ui.warn(
            f"local opencode is {local_version}, the server runs {server_version}; "
            f"if the TUI misbehaves: npm install -g opencode-ai@{server_version}"
        )


def _installed_version(opencode: Path) -> str | None:
    """The version from the npm package beside the binary (no slow ``--version``)."""
    for parent in opencode.resolve().parents:
        manifest = parent / "package.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            if str(data.get("name", "")).startswith("opencode"):
                return str(data.get("version") or "") or None
            return None
        candidate = parent / "lib" / "node_modules" / "opencode-ai" / "package.json"
        if candidate.is_file():
            return _installed_version(candidate)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(proxy: subprocess.Popen[bytes]) -> None:
    if proxy.poll() is not None:
        return
    try:
        os.killpg(proxy.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proxy.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proxy.pid, signal.SIGKILL)
        proxy.wait()
