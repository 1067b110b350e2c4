"""End to end with the local provider: the sandbox is a directory here, OpenCode a
background process, and the whole flow (up, reply, attach in a real terminal, down)
runs with real OpenCode and the fake model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from af_remote import paths
from conftest import GLUE, require_tool
from e2e_support import (
    FAKE_API_KEY,
    Project,
    af,
    af_json,
    make_project,
    opencode_prefix,
    password,
    registry,
    reply_text,
)
from fakellm import FakeLLM
from opencode_support import TUI_QUIT_KEY, Tmux

pytestmark = pytest.mark.e2e
SANDBOX = "af-local-e2e"


@pytest.fixture
def project(tmp_path: Path, llm: FakeLLM) -> Iterator[Project]:
    prefix = opencode_prefix()
    project = make_project(
        tmp_path,
        "local",
        llm.base_url,
        data={"sandbox": SANDBOX},
        env_lines={"AF_REMOTE_OPENCODE_PREFIX": str(prefix)},
    )
    yield project
    # Whatever a test left running goes with its sandbox.
    af(project.root, "down", "--destroy")


def _sandbox() -> Path:
    return paths.local_sandboxes_dir() / SANDBOX


def _server_pid() -> int | None:
    try:
        return int((_sandbox() / "run" / "opencode.pid").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_flow_with_attach(project: Project, llm: FakeLLM, tmp_path: Path) -> None:
    require_tool("tmux")
    spawn = af_json(project.root, "up", "--prompt", "Hello from the local test")

    assert spawn["provider"] == "local" and spawn["state"] == "running"
    assert spawn["server_ref"].startswith("http://127.0.0.1:")
    secret = password("local", SANDBOX)
    reply = reply_text(
        spawn["server_ref"], secret, spawn["session_id"], spawn["workdir"]
    )
    assert reply == "Hello from the local test"
    assert (Path(spawn["workdir"]) / "README.md").is_file()
    listed = af_json(project.root, "ls")["spawns"]
    assert [s["session_id"] for s in listed] == [spawn["session_id"]]
    (session,) = registry("sessions.json")["records"]
    assert session["server_ref"] == spawn["server_ref"]
    assert _sandbox().stat().st_mode & 0o777 == 0o700
    assert (_sandbox() / "secrets.env").stat().st_mode & 0o777 == 0o600

    # attach in a real terminal: the conversation shows; Ctrl-C returns cleanly.
    tmux = Tmux(f"af-local-{uuid.uuid4().hex[:8]}")
    environment = {
        **os.environ,
        "PYTHONPATH": str(GLUE),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "TERM": "xterm-256color",
    }
    try:
        tmux.start(
            [sys.executable, "-m", "af_remote", "attach"],
            env=environment,
            cwd=project.root,
        )
        tmux.wait_for("Hello from the local test", timeout=60)
        tmux.send_keys(TUI_QUIT_KEY)
        assert tmux.wait_exit(timeout=20) == 0
    finally:
        tmux.kill()
    assert _alive(_server_pid() or 0), "quitting the TUI must leave the agent running"

    # down --destroy: no process and no directory left.
    pid = _server_pid()
    assert pid is not None
    done = af(project.root, "down", "--destroy")
    assert done.returncode == 0, done.stderr
    assert not _sandbox().exists()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert {s["state"] for s in registry("remote_spawns.json")["records"]} == {
        "terminated"
    }


def test_stale_pid_file_is_healed(project: Project) -> None:
    first = af_json(project.root, "up")
    pid = _server_pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)
    # The pid file now names a dead process; up starts the server again.
    again = af_json(project.root, "up")
    assert again["spawn_id"] == first["spawn_id"] and again["changed"] is False
    new_pid = _server_pid()
    assert new_pid not in (None, pid) and _alive(new_pid or 0)
    status = af_json(project.root, "status")
    assert status["server"]["healthy"] is True


def test_port_taken_by_another_program(project: Project) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = af(
            project.root,
            "up",
            "--prompt",
            "x",
            env={"AF_REMOTE_SERVER_PORT": str(port)},
        )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert any(f"port {port} is in use by another program" in line for line in errors)
    (spawn,) = registry("remote_spawns.json")["records"]
    assert spawn["state"] == "failed"


def test_sandbox_deleted_by_hand(project: Project) -> None:
    first = af_json(project.root, "up")
    pid = _server_pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(_sandbox())], check=True)

    second = af_json(project.root, "up")

    assert second["spawn_id"] != first["spawn_id"] and second["state"] == "running"
    records = {r["spawn_id"]: r for r in registry("remote_spawns.json")["records"]}
    assert records[first["spawn_id"]]["state"] == "terminated"
    assert "deleted" in records[first["spawn_id"]]["last_error"]
    assert _sandbox().is_dir()
