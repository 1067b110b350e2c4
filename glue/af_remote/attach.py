"""``attach``: the OpenCode TUI on a spawn's session, in the user's terminal.

For a sprite, a ``sprite proxy`` forwards a free local port to the server; the TUI
talks to ``http://127.0.0.1:PORT`` with the password in its environment (never in
argv). The proxy lives exactly as long as the TUI: it is stopped when the TUI
exits, is interrupted, fails to start, or loses its terminal; and a proxy that dies
under the TUI closes it, since the TUI never recovers its event stream.

Two environment variables, for tests and for users with special needs:
``AF_REMOTE_PROXY_PORT`` forces the local port of the proxy (default: a free one),
``AF_REMOTE_ATTACH_TIMEOUT`` is how many seconds to wait for the server through the
proxy (default 60; a paused sprite wakes within it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from af_remote import lifecycle, listing, native, project, ui
from af_remote.errors import AfRemoteError, NotReadyError, UsageError
from af_remote.local import LocalSandbox
from af_remote.records import Record

HEALTH_TIMEOUT = 60.0
PROXY_PORT_VARIABLE = "AF_REMOTE_PROXY_PORT"
TIMEOUT_VARIABLE = "AF_REMOTE_ATTACH_TIMEOUT"
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
        status = _run_foreground(argv, password, endpoint)
    if status == 0:
        # The TUI's parting hint (`opencode -s ID`) works only on the server's
        # machine; say how to come back from this one.
        ui.progress(
            "detached; the agent keeps running "
            f"(`af-remote attach {spawn['spawn_id']}` returns to it)"
        )
    return status


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
    # What to run by hand when the server does not answer through the proxy.
    inspect_argv: list[str] = field(default_factory=list)
    proxy_output: IO[bytes] | None = None

    def proxy_failure(self) -> str:
        """How the proxy ended: its exit code and the last line it printed."""
        proxy = self.proxy
        if proxy is None or proxy.returncode is None:
            return ""
        output = b""
        if self.proxy_output is not None:
            self.proxy_output.seek(0)
            output = self.proxy_output.read()
        lines = output.decode(errors="replace").strip().splitlines()
        return f"exited with {proxy.returncode}: {(lines or ['no output'])[-1]}"


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
    local_port = _local_port()
    argv = sprite.proxy_argv(local_port, int(extras.get("server_port") or 8080))
    inspect = sprite.exec_argv(["sprite-env", "services", "list"])
    ui.log.info("$ %s", native.display(argv))
    # A file rather than a pipe: nobody reads the proxy's output while the TUI runs,
    # and a full pipe would stall it.
    with tempfile.TemporaryFile() as output:
        try:
            # Its own session: Ctrl-C in the TUI must not kill the proxy before we do.
            proxy = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=output,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise AfRemoteError(
                "`sprite` is not on PATH", hint="install the sprite CLI and log in"
            ) from None
        try:
            yield Endpoint(
                f"http://127.0.0.1:{local_port}", proxy, argv, inspect, output
            )
        finally:
            _stop(proxy)


def _local_port() -> int:
    forced = os.environ.get(PROXY_PORT_VARIABLE)
    if not forced:
        return free_port()
    if not forced.isdigit() or not 0 < int(forced) < 65536:
        raise UsageError(f"{PROXY_PORT_VARIABLE}={forced!r}: not a TCP port")
    return int(forced)


def _health_timeout() -> float:
    configured = os.environ.get(TIMEOUT_VARIABLE)
    if not configured:
        return HEALTH_TIMEOUT
    try:
        seconds = float(configured)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{TIMEOUT_VARIABLE}={configured!r}: not a number of seconds")
    return seconds


def _wait_healthy(endpoint: Endpoint, password: str) -> dict[str, Any]:
    """Health through the endpoint; through a proxy this also wakes the sprite."""
    from af_remote.opencode import PasswordRefused, Server

    with Server(endpoint.url, password, timeout=5.0) as server:
        proxy = endpoint.proxy
        if proxy is None:
            return server.wait_healthy(10.0)
        ui.progress("waiting for the server through sprite proxy")
        timeout = _health_timeout()
        deadline = time.monotonic() + timeout
        while True:
            if proxy.poll() is not None:
                raise AfRemoteError(
                    f"sprite proxy {endpoint.proxy_failure()}",
                    hint=f"to see it yourself: {native.display(endpoint.proxy_argv)}",
                )
            remaining = deadline - time.monotonic()
            try:
                return server.wait_healthy(min(2.0, max(0.1, remaining)))
            except PasswordRefused:
                raise
            except AfRemoteError:
                if time.monotonic() >= deadline:
                    raise AfRemoteError(
                        "the OpenCode server did not answer through sprite proxy "
                        f"within {timeout:g}s",
                        hint="`af-remote status` asks the sprite; by hand: "
                        + native.display(endpoint.inspect_argv),
                    ) from None


def _run_foreground(argv: list[str], password: str, endpoint: Endpoint) -> int:
    environment = {**os.environ, "OPENCODE_SERVER_PASSWORD": password}
    ui.log.info("$ %s", native.display(argv))
    with _signals_end_the_tui():
        child = subprocess.Popen(argv, env=environment)
        with _closed_when_the_proxy_dies(endpoint.proxy, child) as proxy_died:
            try:
                status = child.wait()
            except _TerminalGone as gone:
                status = -gone.signum
            finally:
                _stop_tui(child)
    if proxy_died.is_set():
        raise AfRemoteError(
            f"sprite proxy {endpoint.proxy_failure()}; the TUI was closed",
            hint="`af-remote attach` connects again",
        )
    # A TUI ended by a signal reports it the way a shell would.
    return 128 - status if status < 0 else status


@contextmanager
def _closed_when_the_proxy_dies(
    proxy: subprocess.Popen[bytes] | None, tui: subprocess.Popen[bytes]
) -> Iterator[threading.Event]:
    """A TUI whose proxy died shows a screen that never updates again (its event
    stream does not reconnect), so it is closed rather than left looking alive."""
    died = threading.Event()
    if proxy is None:
        yield died
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            if proxy.poll() is not None:
                died.set()
                tui.terminate()
                return

    watcher = threading.Thread(target=watch, name="proxy-watch", daemon=True)
    watcher.start()
    try:
        yield died
    finally:
        done.set()
        watcher.join()


class _TerminalGone(AfRemoteError):
    """The terminal hung up, or af-remote was told to stop, while the TUI ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


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
        # What is left is cleanup (stop the proxy, a line of output): a Ctrl-C
        # pressed twice to quit the TUI, or sent as it exits, must not cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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
