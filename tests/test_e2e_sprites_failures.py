"""What `up` does when a step fails, on the sprite stand-in: one clear line, the
documented exit code, the record in `failed` or `unknown` with `last_error`, and a
rerun that converges without a second sprite or session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GLUE
from e2e_support import (
    FAKE_API_KEY,
    Project,
    af,
    af_json,
    make_project,
    opencode_prefix,
    registry,
)
from fakellm import FakeLLM
from opencode_support import free_port
from standin import fixture as standin_fixture
from standin.fixture import Standin

pytestmark = pytest.mark.e2e

sprite_standin = standin_fixture.sprite_standin
SANDBOX = "af-fail"


@pytest.fixture
def project(tmp_path: Path, sprite_standin: Standin) -> Project:
    sprite_standin.seed_new_homes(opencode_prefix(), ".af-remote/opencode")
    llm = FakeLLM(reply="ok").start()
    try:
        yield make_project(
            tmp_path,
            "sprites",
            llm.base_url,
            data={"server_port": str(free_port()), "sandbox": SANDBOX},
        )
    finally:
        llm.stop()


def _spawns() -> list[dict[str, object]]:
    path = Path(os.environ["XDG_CONFIG_HOME"], "aetherflow/sessions/remote_spawns.json")
    if not path.exists():
        return []
    return list(registry("remote_spawns.json")["records"])


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("af-remote: error")]


def _assert_converges(project: Project, standin: Standin) -> dict[str, object]:
    """A plain rerun ends running, with exactly one sprite of that name."""
    spawn = af_json(project.root, "up", "--prompt", "again")
    assert spawn["state"] == "running"
    listed = standin.run("list").stdout.split()
    assert listed.count(SANDBOX) == 1
    return dict(spawn)


def test_no_sprite_cli_on_path(project: Project, sprite_standin: Standin) -> None:
    path = os.pathsep.join(
        entry
        for entry in os.environ["PATH"].split(os.pathsep)
        if entry != str(sprite_standin.bin_dir)
    )
    result = af(project.root, "up", "--prompt", "x", env={"PATH": path})

    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "`sprite` is not on PATH" in line and "sprite login" in line
    (spawn,) = _spawns()
    assert spawn["state"] == "failed" and "not on PATH" in str(spawn["last_error"])
    _assert_converges(project, sprite_standin)


def test_not_logged_in(project: Project, sprite_standin: Standin) -> None:
    sprite_standin.logout()
    result = af(project.root, "up", "--prompt", "x")

    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "not logged in" in line and "sprite login" in line
    (spawn,) = _spawns()
    assert spawn["state"] == "failed"
    assert sprite_standin.count("create") == 1 and sprite_standin.count("exec") == 0
    sprite_standin.login()
    _assert_converges(project, sprite_standin)


def test_create_rate_limited(project: Project, sprite_standin: Standin) -> None:
    sprite_standin.set_fault(
        "create", kind="rate_limit", retry_after_seconds=42, times=1
    )
    result = af(project.root, "up", "--prompt", "x")

    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "rate limited" in line and "retry in 42 s" in line
    (spawn,) = _spawns()
    assert spawn["state"] == "failed" and "42" in str(spawn["last_error"])
    _assert_converges(project, sprite_standin)
    assert sprite_standin.count("create") == 2


def test_exec_transport_error_midway_then_resume(
    project: Project, sprite_standin: Standin
) -> None:
    sprite_standin.set_fault("exec", kind="transport", after_seconds=1.5, times=1)
    result = af(project.root, "up", "--prompt", "x", "--request-id", "job-1")

    assert result.returncode == 1
    assert len(_error_lines(result.stderr)) == 1
    (spawn,) = _spawns()
    assert spawn["state"] == "unknown" and spawn["last_error"]
    # The same request resumes the same spawn, in the same sprite.
    resumed = af_json(project.root, "up", "--prompt", "x", "--request-id", "job-1")
    assert resumed["spawn_id"] == spawn["spawn_id"]
    assert resumed["state"] == "running"
    assert sprite_standin.count("create") == 1
    assert sprite_standin.run("list").stdout.split() == [SANDBOX]
    sessions = registry("sessions.json")["records"]
    assert [s["session_id"] for s in sessions] == [resumed["session_id"]]


def test_bootstrap_step_failure(project: Project, sprite_standin: Standin) -> None:
    env = {
        "AF_REMOTE_SOURCE": "clone",
        "AF_REMOTE_SOURCE_URL": "file:///nonexistent/repository.git",
    }
    result = af(project.root, "up", "--prompt", "x", env=env)

    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "bootstrap failed: step 4/10 failed" in line
    assert "sprite exec -s af-fail" in line  # the native command to look further
    (spawn,) = _spawns()
    assert spawn["state"] == "failed"
    assert "step 4/10" in str(spawn["last_error"])
    _assert_converges(project, sprite_standin)
    assert sprite_standin.count("create") == 1


def test_ctrl_c_during_the_bootstrap(project: Project, sprite_standin: Standin) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": str(GLUE),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "af_remote", "up", "--prompt", "x"],
        cwd=project.root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "placing the source" in line:
            break
    # Ctrl-C in a terminal signals the whole foreground process group.
    os.killpg(process.pid, signal.SIGINT)
    _, rest_err = process.communicate(timeout=60)

    assert process.returncode == 130, "".join(seen) + rest_err
    assert _error_lines(rest_err) == ["af-remote: error: interrupted"]
    (spawn,) = _spawns()
    assert spawn["state"] == "unknown"
    assert "interrupted during step" in str(spawn["last_error"])
    time.sleep(0.5)
    leftovers = subprocess.run(
        ["pgrep", "-f", f"af-remote.{spawn['spawn_id']}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leftovers.stdout.strip() == "", "a process of the spawn outlived af-remote"
    _assert_converges(project, sprite_standin)
    assert sprite_standin.count("create") == 1
