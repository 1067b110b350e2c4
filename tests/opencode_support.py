"""Helpers for tests that run the real OpenCode offline against the fake model.

What OpenCode needs to stay offline and leave the user's files alone is written up in
docs/opencode-offline.md; `offline_env` and `fake_provider_config` are those facts in
code. `OpenCodeServer` runs ``opencode serve`` with them, `OpenCodeClient` speaks its
HTTP API, and `Tmux` drives ``opencode attach`` in a real terminal.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

OPENCODE_VERSION = "1.18.33"
CACHED_OPENCODE = (
    Path.home() / ".cache/af-remote-test/opencode/node_modules/.bin/opencode"
)
SERVER_USERNAME = "opencode"

# The TUI quits on one Ctrl-C while its prompt is empty, exits 0 and prints the session
# title with a "Continue  opencode -s ID" hint. Names are tmux send-keys key names.
TUI_QUIT_KEY = "C-c"

# OpenCode installs @opencode-ai/plugin with npm into every config directory in the
# background. Pointing npm at a closed local port makes that fail at once and quietly,
# instead of downloading ~60 MB on each run (or hanging where there is no network).
UNREACHABLE_NPM_REGISTRY = "http://127.0.0.1:9/"


def opencode_bin() -> Path | None:
    """The OpenCode binary to test with: $AF_REMOTE_TEST_OPENCODE, else the cache."""
    configured = os.environ.get("AF_REMOTE_TEST_OPENCODE")
    candidate = Path(configured) if configured else CACHED_OPENCODE
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


def offline_env(home: Path) -> dict[str, str]:
    """Environment for an OpenCode process that is isolated under `home` and offline.

    The result is complete (not merged with os.environ) so that nothing of the
    developer's own OpenCode setup, keys or config leaks into a test.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": os.environ.get("TERM", "xterm-256color"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_CLAUDE_CODE": "1",
        "npm_config_registry": UNREACHABLE_NPM_REGISTRY,
        "npm_config_update_notifier": "false",
    }


def fake_provider_config(base_url: str, model: str = "fake-model") -> dict[str, Any]:
    """opencode.json content that sends every model call to the fake model server."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": base_url, "apiKey": "fake-key"},
                "models": {model: {"name": "Fake model"}},
            }
        },
        "model": f"fake/{model}",
        # Title generation uses the small model; without this OpenCode picks one from
        # its built-in catalogue, which needs a real provider.
        "small_model": f"fake/{model}",
        "autoupdate": False,
        "share": "disabled",
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_password() -> str:
    return secrets.token_urlsafe(24)


class OpenCodeClient:
    """A small client for the OpenCode server's HTTP API, with basic auth."""

    def __init__(
        self,
        base_url: str,
        password: str | None,
        *,
        username: str = SERVER_USERNAME,
        timeout: float = 10.0,
    ) -> None:
        auth = (username, password) if password is not None else None
        self.http = httpx.Client(base_url=base_url, auth=auth, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OpenCodeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def health(self) -> httpx.Response:
        return self.http.get("/global/health")

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the server answers its health check.

        A connection made while the server is still starting can be accepted and then
        never answered, so each attempt gets a short timeout of its own.
        """
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                response = self.http.get("/global/health", timeout=1.0)
            except httpx.TransportError as error:
                last_error = repr(error)
            else:
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
                last_error = f"HTTP {response.status_code}"
            time.sleep(0.1)
        raise TimeoutError(
            f"OpenCode server not healthy after {timeout}s: {last_error}"
        )

    def create_session(self, directory: Path, title: str | None = None) -> str:
        body = {"title": title} if title is not None else {}
        response = self.http.post(
            "/session", params={"directory": str(directory)}, json=body
        )
        response.raise_for_status()
        session_id: str = response.json()["id"]
        return session_id

    def session(self, session_id: str) -> dict[str, Any]:
        response = self.http.get(f"/session/{session_id}")
        response.raise_for_status()
        info: dict[str, Any] = response.json()
        return info

    def prompt_async(
        self, session_id: str, directory: Path, text: str
    ) -> httpx.Response:
        return self.http.post(
            f"/session/{session_id}/prompt_async",
            params={"directory": str(directory)},
            json={"parts": [{"type": "text", "text": text}]},
        )

    def status(self) -> dict[str, Any]:
        response = self.http.get("/session/status")
        response.raise_for_status()
        statuses: dict[str, Any] = response.json()
        return statuses

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/session/{session_id}/message")
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()
        return messages

    def is_idle(self, session_id: str) -> bool:
        """Whether the session has answered its last prompt and is not busy.

        ``prompt_async`` returns before the session shows as busy, so an absent status
        alone would call a just-prompted session idle; the last message must also be a
        completed assistant message.
        """
        if session_id in self.status():
            return False
        messages = self.messages(session_id)
        if not messages:
            return False
        last = messages[-1]["info"]
        return last.get("role") == "assistant" and "completed" in last.get("time", {})

    def wait_busy(self, session_id: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.status().get(session_id, {}).get("type") != "busy":
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id} never became busy")
            time.sleep(0.02)

    def wait_idle(self, session_id: str, timeout: float = 60.0) -> None:
        """Wait until the session has finished answering; only useful after a prompt."""
        deadline = time.monotonic() + timeout
        while not self.is_idle(session_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id} still busy after {timeout}s")
            time.sleep(0.1)

    def reply_text(self, session_id: str) -> str:
        """The text parts of the session's last assistant message, joined."""
        for message in reversed(self.messages(session_id)):
            if message["info"].get("role") == "assistant":
                return "".join(
                    part.get("text", "")
                    for part in message["parts"]
                    if part.get("type") == "text" and not part.get("synthetic")
                )
        return ""


class OpenCodeServer:
    """``opencode serve`` on 127.0.0.1 with the fake provider, isolated under `home`.

    The password reaches the server through its environment only. Output goes to
    ``home/serve.log`` so that a failing test can show it.
    """

    def __init__(
        self,
        binary: Path,
        home: Path,
        workdir: Path,
        config: Mapping[str, Any],
        *,
        password: str | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = binary
        self.home = home
        self.workdir = workdir
        self.config = dict(config)
        self.password = password or new_password()
        self.port = port or free_port()
        self.log_path = home / "serve.log"
        self.config_path = home / "opencode.json"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def env(self) -> dict[str, str]:
        """The server's environment; also what ``opencode attach`` needs to connect."""
        env = offline_env(self.home)
        env["OPENCODE_CONFIG"] = str(self.config_path)
        env["OPENCODE_SERVER_PASSWORD"] = self.password
        return env

    def client(self) -> OpenCodeClient:
        return OpenCodeClient(self.url, self.password)

    def start(self, timeout: float = 60.0) -> OpenCodeServer:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        argv = [str(self.binary), "serve", "--port", str(self.port)]
        argv += ["--hostname", "127.0.0.1"]
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with self.client() as client:
            try:
                client.wait_healthy(timeout)
            except TimeoutError as error:
                self.stop()
                raise TimeoutError(f"{error}\n{self.log()}") from None
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> OpenCodeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Tmux:
    """A private tmux server (its own ``-L`` socket) holding one terminal program.

    The program's environment is given to the tmux server when it starts, so that
    secrets such as the OpenCode password never appear in any argv.
    """

    def __init__(self, socket_name: str) -> None:
        if shutil.which("tmux") is None:
            raise FileNotFoundError("tmux is not installed")
        self.socket_name = socket_name
        descriptor, name = tempfile.mkstemp(prefix=f"{socket_name}.", suffix=".status")
        os.close(descriptor)
        self._status_file = Path(name)

    def _run(
        self, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket_name, *args],
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )
        return result.stdout

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        width: int = 200,
        height: int = 50,
    ) -> None:
        """Run argv in a new detached session; the pane stays after it exits."""
        # tmux 3.3 sometimes marks a pane dead without ever recording its exit
        # status, so a small launcher writes it to a file. Its SIGINT handler (not
        # SIG_IGN, which the program would inherit) lets Ctrl-C reach the program
        # alone.
        launcher = (
            "import signal, subprocess, sys\n"
            "signal.signal(signal.SIGINT, lambda *_: None)\n"
            "code = subprocess.call(sys.argv[2:])\n"
            "open(sys.argv[1], 'w').write(str(code))\n"
        )
        argv = [sys.executable, "-c", launcher, str(self._status_file), *argv]
        # With more than one argument tmux runs the command without a shell.
        self._run(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(cwd),
            *argv,
            ";",
            "set-option",
            "remain-on-exit",
            "on",
            env=env,
        )

    def capture(self) -> str:
        return self._run("capture-pane", "-p")

    def send_keys(self, *keys: str) -> None:
        self._run("send-keys", *keys)

    def wait_for(self, *texts: str, timeout: float = 30.0) -> float:
        """Seconds until every text shows on the screen at once."""
        started = time.monotonic()
        while True:
            screen = self.capture()
            if all(text in screen for text in texts):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{texts!r} not on screen; it shows:\n{screen}")
            time.sleep(0.1)

    def exit_status(self) -> int | None:
        """The program's exit status once it has ended, else None.

        A program ended by signal N reads as -N, as subprocess reports it.
        """
        text = self._status_file.read_text().strip()
        return int(text) if text else None

    def wait_exit(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while (status := self.exit_status()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the terminal program did not exit")
            time.sleep(0.05)
        return status

    def kill(self) -> None:
        self._run("kill-server", check=False)
        self._status_file.unlink(missing_ok=True)
        socket_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (socket_dir / self.socket_name).unlink(missing_ok=True)
