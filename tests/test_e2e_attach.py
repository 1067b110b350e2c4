"""``af-remote attach`` end to end: a real terminal (tmux) runs af-remote after an
``up`` on the sprite stand-in, with real OpenCode serving in the sprite and the real
TUI on this side of ``sprite proxy``.

What must hold: the screen shows the session's title and the fake model's reply; the
password is in no process's argv while attached; however the TUI ends (quit key, the
terminal closing) no proxy is left; a second run works again; and every failure
before the TUI is one clear line with the documented exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from af_remote import config
from af_remote.records import Registry
from conftest import GLUE
from e2e_support import (
    OFFLINE_SERVER_ENV,
    Project,
    af,
    af_json,
    make_project,
    opencode_prefix,
    password,
    reply_text,
)
from fakellm import FakeLLM
from opencode_support import TUI_QUIT_KEY, Tmux, free_port
from reliability_support import ArgvSampler, cmdlines, sprite_processes
from standin import fixture as standin_fixture
from standin.fixture import Standin

pytestmark = pytest.mark.e2e

sprite_standin = standin_fixture.sprite_standin

SANDBOX = "af-attach"
TITLE = "Attach e2e 7731"
PROMPT = "attach-reply-5531"


@dataclass
class Attached:
    """A project with one running spawn whose agent has answered."""

    project: Project
    standin: Standin
    spawn: dict[str, object]
    port: int

    @property
    def session_id(self) -> str:
        return str(self.spawn["session_id"])


@pytest.fixture
def attached(tmp_path: Path, sprite_standin: Standin, llm: FakeLLM) -> Attached:
    sprite_standin.seed_new_homes(opencode_prefix(), ".af-remote/opencode")
    port = free_port()
    project = make_project(
        tmp_path,
        "sprites",
        llm.base_url,
        data={"server_port": str(port), "sandbox": SANDBOX},
    )
    spawn = af_json(project.root, "up", "--prompt", PROMPT, "--title", TITLE)
    reply = reply_text(
        f"http://127.0.0.1:{port}",
        password("sprites", SANDBOX),
        str(spawn["session_id"]),
        str(spawn["workdir"]),
    )
    assert reply == PROMPT
    return Attached(project, sprite_standin, spawn, port)


def attach_env(*, with_opencode: bool = True) -> dict[str, str]:
    """The user's shell: the stand-in first on PATH, the local TUI kept offline."""
    # Only the test's own OpenCode, or none at all: the sprites provider has no
    # fallback, so a PATH without it is a machine without it.
    folders = [
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if not (Path(folder) / "opencode").exists()
    ]
    if with_opencode:
        folders.append(str(opencode_prefix() / "bin"))
    path = os.pathsep.join(folders)
    return {
        **os.environ,
        **OFFLINE_SERVER_ENV,
        "PATH": path,
        "PYTHONPATH": str(GLUE),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
    }


def attach_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "af_remote", "attach", *args]


def proxies_of(standin: Standin) -> list[int]:
    """Live ``sprite proxy`` processes of this test's stand-in."""
    return sprite_processes(standin.root, "proxy")


def tuis_of(session_id: str) -> list[int]:
    return [
        pid
        for pid, cmdline in cmdlines().items()
        if b"attach" in cmdline and session_id.encode() in cmdline
    ]


def ignores(pid: int, signum: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) & (1 << (signum - 1)))


def new_tmux() -> Tmux:
    return Tmux(f"af-remote-attach-{uuid.uuid4().hex[:12]}")


def exit_code(tmux: Tmux, timeout: float = 15.0) -> int:
    """af-remote's exit status in the pane.

    tmux can mark the pane dead (its terminal closed) a moment before it has reaped
    the program; the status shows up once it has.
    """
    tmux.wait_exit(timeout)
    deadline = time.monotonic() + 5
    while (status := tmux.exit_status()) == -1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status is not None
    return status


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line af-remote prints (progress lines start with spaces)."""
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_attach_end_to_end(attached: Attached) -> None:
    # One `up` serves every phase: it is the slow part.
    quit_with_ctrl_c(attached)
    fetch_the_password_then_close_the_terminal(attached)
    lose_the_proxy_under_the_tui(attached)
    fail_before_the_tui(attached)


def quit_with_ctrl_c(attached: Attached) -> None:
    """The user's own machine: the password file is there."""
    standin, session_id = attached.standin, attached.session_id
    secret = password("sprites", SANDBOX)
    tmux = new_tmux()
    try:
        with ArgvSampler([secret]) as watch:
            started = time.monotonic()
            tmux.start(attach_argv(), env=attach_env(), cwd=attached.project.root)
            tmux.wait_for(TITLE, PROMPT, timeout=60)
            first_frame = time.monotonic() - started
            assert len(proxies_of(standin)) == 1
            (tui,) = tuis_of(session_id)
            # The TUI gets the terminal's signals as if the user had run it.
            assert not ignores(tui, signal.SIGINT)
            time.sleep(0.5)  # a few more argv rounds with the TUI settled
        screen = tmux.capture()
        print(f"\nattach: first frame with the reply after {first_frame:.2f}s")
        print(screen)
        assert watch.rounds > 5 and watch.leaks == []
        tmux.send_keys(TUI_QUIT_KEY)
        assert exit_code(tmux) == 0
        farewell = tmux.capture()
        assert f"opencode -s {session_id}" in farewell
        spawn_id = attached.spawn["spawn_id"]
        assert f"`af-remote attach {spawn_id}` returns to it" in farewell
    finally:
        tmux.kill()
    assert proxies_of(standin) == [] and tuis_of(session_id) == []


def fetch_the_password_then_close_the_terminal(attached: Attached) -> None:
    """Another machine: no password file, so it is fetched once and stored."""
    standin, session_id = attached.standin, attached.session_id
    secret = password("sprites", SANDBOX)
    password_file = config.password_path("sprites", None, SANDBOX)
    password_file.unlink()
    execs = standin.count("exec")
    tmux = new_tmux()
    try:
        with ArgvSampler([secret]) as watch:
            tmux.start(
                attach_argv(session_id[:12]),
                env=attach_env(),
                cwd=attached.project.root,
            )
            tmux.wait_for(TITLE, PROMPT, timeout=60)
        assert watch.leaks == []
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert password_file.read_text().strip() == secret
        assert standin.count("exec") == execs + 1
        assert len(proxies_of(standin)) == 1
    finally:
        tmux.kill()  # the terminal goes away under the TUI
    assert standin.wait_for(lambda: not proxies_of(standin), timeout=10), (
        "closing the terminal left sprite proxy running"
    )
    assert standin.wait_for(lambda: not tuis_of(session_id), timeout=10)


def lose_the_proxy_under_the_tui(attached: Attached) -> None:
    """A dead proxy closes the TUI, whose screen would never update again."""
    standin, session_id = attached.standin, attached.session_id
    tmux = new_tmux()
    try:
        tmux.start(attach_argv(), env=attach_env(), cwd=attached.project.root)
        tmux.wait_for(TITLE, PROMPT, timeout=60)
        (proxy,) = proxies_of(standin)
        os.kill(proxy, signal.SIGKILL)
        assert exit_code(tmux) == 1
        screen = tmux.capture()
        assert "sprite proxy exited with -9" in screen
        assert "the TUI was closed" in screen
    finally:
        tmux.kill()
    assert proxies_of(standin) == [] and tuis_of(session_id) == []


def fail_before_the_tui(attached: Attached) -> None:
    root, standin = attached.project.root, attached.standin

    # No local opencode: the install command for the server's version, and the
    # sprite is not touched.
    calls = standin.count()
    missing = af(root, "attach", env=attach_env(with_opencode=False))
    assert missing.returncode == 1
    assert "opencode is not installed" in error_line(missing)
    assert "npm install -g opencode-ai@1.18.33" in error_line(missing)
    assert standin.count() == calls

    # The local port is taken (between the pick and the proxy's start).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = af(
            root,
            "attach",
            env={**attach_env(), "AF_REMOTE_PROXY_PORT": str(port)},
        )
    assert busy.returncode == 1
    line = error_line(busy)
    assert "sprite proxy exited with 1" in line and "address already in use" in line
    assert f"sprite proxy -s {SANDBOX} {port}:{attached.port}" in line
    assert proxies_of(standin) == []

    # The server never answers: bounded by the timeout, and the proxy is stopped.
    stopped = standin.exec(SANDBOX, "sprite-env", "services", "stop", "opencode")
    assert stopped.returncode == 0, stopped.stderr
    started = time.monotonic()
    silent = af(root, "attach", env={**attach_env(), "AF_REMOTE_ATTACH_TIMEOUT": "2"})
    elapsed = time.monotonic() - started
    assert silent.returncode == 1
    line = error_line(silent)
    assert "did not answer through sprite proxy within 2s" in line
    assert f"sprite exec -s {SANDBOX} -- sprite-env services list" in line
    assert elapsed < 15
    assert proxies_of(standin) == [] and tuis_of(attached.session_id) == []


def test_a_spawn_that_is_not_running_says_its_state(
    tmp_path: Path, sprite_standin: Standin
) -> None:
    registry = Registry()
    pending = registry.create_spawn(provider="sprites", sandbox=SANDBOX)
    spawn_id = str(pending["spawn_id"])

    for state in ("requested", "spawning"):
        registry.update_spawn(spawn_id, state=state)
        result = af(tmp_path, "attach", spawn_id, env=attach_env())
        assert result.returncode == 3, result.stderr
        assert f"spawn {spawn_id} is not running yet (state {state})" in (
            error_line(result)
        )

    registry.update_spawn(spawn_id, state="terminated")
    ended = af(tmp_path, "attach", spawn_id[:10], env=attach_env())
    assert ended.returncode == 2
    assert f"spawn {spawn_id} is terminated" in error_line(ended)

    # Two spawns share every prefix up to their ids: a list, not a guess.
    other = str(registry.create_spawn(provider="sprites", sandbox=SANDBOX)["spawn_id"])
    differs = next(
        i for i, (a, b) in enumerate(zip(spawn_id, other, strict=True)) if a != b
    )
    common = spawn_id[:differs]
    assert common, (spawn_id, other)
    ambiguous = af(tmp_path, "attach", common, env=attach_env())
    assert ambiguous.returncode == 2
    assert spawn_id in error_line(ambiguous) and other in error_line(ambiguous)

    # Nothing reached the sprite CLI, and no proxy was started.
    assert sprite_standin.count() == 0 and proxies_of(sprite_standin) == []
