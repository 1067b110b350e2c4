"""Faults at every step, on the sprite stand-in: each step of ``up`` (create,
exec), ``attach`` (proxy, health) and ``down`` (abort, destroy) fails in turn: the
CLI exits non-zero, is cut off, times out, or is interrupted by Ctrl-C just then.

Whatever happens: the documented exit code (1 or 130), one error line naming the
native command to look further (a Ctrl-C says only that it was interrupted), the
record in the right state with ``last_error``, no ``sprite`` CLI, proxy or TUI left
running, and a plain rerun that converges without a second sprite or session.

One project and one running spawn are shared by the module: faults later in the
flow need no fresh ``up`` of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import reliability_support
from af_remote import config
from af_remote.records import Registry
from conftest import GLUE
from e2e_support import FAKE_API_KEY, af
from opencode_support import free_port
from reliability_support import (
    TALLY,
    World,
    enter,
    fake_tui,
    left_behind,
    sprite_processes,
    sprites_world,
)

tally = reliability_support.tally  # prints the counts after the session
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("tally")]

SANDBOX = "af-faults"
DEADLINE = (
    "Error: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
)
LATENCY = "20"  # seconds each `sprite` call sleeps first: the window for a Ctrl-C


@pytest.fixture(scope="module")
def module_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("faults")
    with sprites_world(base, sandbox=SANDBOX) as world:
        world.extra["tui_dir"] = fake_tui(base)
        first = af(world.project.root, "up", "--json", "--prompt", "first")
        assert first.returncode == 0, first.stderr
        yield world


@pytest.fixture
def world(module_world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    enter(module_world, monkeypatch)
    yield module_world
    module_world.standin.clear_faults()


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        lines = [
            line
            for line in self.stderr.splitlines()
            if line.startswith("af-remote: error: ")
        ]
        assert len(lines) == 1, self.stderr
        return lines[0]


def run(world: World, *args: str, env: dict[str, str] | None = None) -> Outcome:
    result = af(world.project.root, *args, env=env)
    return Outcome(result.returncode, result.stdout, result.stderr)


def interrupt(
    world: World,
    *args: str,
    during: str,
    env: dict[str, str] | None = None,
    settle: float = 0.0,
) -> Outcome:
    """Run af-remote and press Ctrl-C while `sprite DURING` runs.

    Every `sprite` call of this run sleeps first, which holds the step open; Ctrl-C
    in a terminal signals the whole foreground process group.
    """
    environment = {
        **os.environ,
        "PYTHONPATH": str(GLUE),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "SPRITE_STANDIN_LATENCY": LATENCY,
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "af_remote", *args],
        cwd=world.project.root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        found = world.standin.wait_for(
            lambda: bool(sprite_processes(world.standin.root, during)), timeout=60
        )
        assert found, f"`sprite {during}` never ran"
        time.sleep(settle)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Outcome(process.returncode, stdout, stderr)


def spawns() -> dict[str, dict[str, Any]]:
    return {str(s["spawn_id"]): s for s in Registry().spawns()}


def sessions() -> list[dict[str, Any]]:
    return Registry().sessions()


def running(world: World, sandbox: str = SANDBOX) -> dict[str, Any]:
    candidates = [
        s
        for s in spawns().values()
        if s["state"] == "running" and s["provider_sandbox_id"] == sandbox
    ]
    return max(candidates, key=lambda s: str(s["created_at"]))


def assert_nothing_left(world: World, *markers: str) -> None:
    assert world.standin.wait_for(
        lambda: not left_behind(world.standin.root, *markers), timeout=10
    ), left_behind(world.standin.root, *markers)


def assert_one_of_each(world: World, sandbox: str) -> None:
    """One sprite of that name; no session recorded twice."""
    assert world.standin.run("list").stdout.split().count(sandbox) == 1
    ids = [s["session_id"] for s in sessions()]
    assert len(ids) == len(set(ids))


# --- up: create, exec -------------------------------------------------------------

UP_FAULTS = [
    pytest.param("create", "fail", id="create-fails"),
    pytest.param("create", "timeout", id="create-times-out"),
    pytest.param("create", "interrupt", id="create-interrupted"),
    pytest.param("exec", "fail", id="exec-fails"),
    pytest.param("exec", "timeout", id="exec-times-out"),
    pytest.param("exec", "transport", id="exec-cut-off"),
    pytest.param("exec", "interrupt", id="exec-interrupted"),
]


@pytest.mark.parametrize(("step", "kind"), UP_FAULTS)
def test_up(world: World, step: str, kind: str) -> None:
    # A create fault needs a sprite of its own; an exec fault uses the module's.
    sandbox = f"af-f-{kind}" if step == "create" else SANDBOX
    port = str(free_port()) if step == "create" else str(world.port)
    env = {"AF_REMOTE_SERVER_PORT": port}
    args = ("up", "--name", sandbox, "--prompt", f"{step} {kind}")
    before = set(spawns())
    TALLY["faults injected"] += 1

    if kind == "interrupt":
        outcome = interrupt(world, *args, during=step, env=env)
    else:
        if kind == "transport":
            world.standin.set_fault("exec", kind="transport", after_bytes=1, times=1)
        else:
            stderr = DEADLINE if kind == "timeout" else f"Error: {step} refused (500)"
            world.standin.set_fault(step, stderr=stderr, times=1)
        outcome = run(world, *args, env=env)

    (new,) = [spawns()[key] for key in set(spawns()) - before]
    if kind == "interrupt":
        assert outcome.code == 130
        assert outcome.error == "af-remote: error: interrupted"
        assert new["state"] == "unknown"
        assert "run `af-remote up` again to converge" in new["last_error"]
    else:
        assert outcome.code == 1
        native = f"sprite {step} " + ("--skip-console" if step == "create" else "-s")
        assert f"to see it yourself: {native}" in outcome.error
        assert new["state"] == ("failed" if step == "create" else "unknown")
        assert new["last_error"]
        if kind == "timeout":
            assert "context deadline exceeded" in outcome.error
    assert_nothing_left(world, new["spawn_id"])
    # Uploads land in the sprite's /tmp, which the stand-in shares with this host.
    stranded = list(Path("/tmp").glob(f"af-remote.{new['spawn_id']}.*"))
    for path in stranded:
        an_hour_ago = time.time() - 3600
        os.utime(path, (an_hour_ago, an_hour_ago))

    rerun = run(world, *args[:-1], "again", "--json", env=env)
    assert rerun.code == 0, rerun.stderr
    assert json.loads(rerun.stdout)["state"] == "running"
    assert_one_of_each(world, sandbox)
    # A cut-off run's uploads (its secrets.env among them) do not stay behind.
    assert [path for path in stranded if path.exists()] == []
    if step == "create":
        assert world.standin.count("create") >= 2
        down = run(world, "down", "--destroy", json.loads(rerun.stdout)["spawn_id"])
        assert down.code == 0, down.stderr


def test_up_completes_a_repository_an_interrupted_run_left_half_made(
    world: World,
) -> None:
    """Ctrl-C during the bootstrap's `git init` leaves a folder that is no
    repository; the next run must not take it for one."""
    sandbox, port = "af-f-half-init", str(free_port())
    world.standin.create(sandbox)
    half_made = world.standin.home(sandbox) / ".af-remote" / "repo.git"
    half_made.mkdir(parents=True)
    (half_made / "config").write_text("[core]\n")  # no HEAD, no objects yet
    TALLY["faults injected"] += 1

    rerun = run(
        world,
        "up",
        "--name",
        sandbox,
        "--json",
        "--prompt",
        "after a cut-off init",
        env={"AF_REMOTE_SERVER_PORT": port},
    )

    assert rerun.code == 0, rerun.stderr
    assert_one_of_each(world, sandbox)
    down = run(world, "down", "--destroy", json.loads(rerun.stdout)["spawn_id"])
    assert down.code == 0, down.stderr


# --- attach: proxy, health -----------------------------------------------------------

ATTACH_FAULTS = [
    pytest.param("proxy", "fail", id="proxy-fails"),
    pytest.param("proxy", "interrupt", id="proxy-interrupted"),
    pytest.param("health", "timeout", id="health-times-out"),
    pytest.param("health", "password", id="health-refuses-the-password"),
    pytest.param("health", "interrupt", id="health-interrupted"),
]


@pytest.mark.parametrize(("step", "kind"), ATTACH_FAULTS)
def test_attach(world: World, step: str, kind: str, tmp_path: Path) -> None:
    spawn = running(world)
    out = tmp_path / "tui.json"
    env = {
        "PATH": f"{world.extra['tui_dir']}{os.pathsep}{os.environ['PATH']}",
        "AF_TEST_TUI_OUT": str(out),
        "AF_REMOTE_ATTACH_TIMEOUT": "3",
    }
    password_file = config.password_path("sprites", None, SANDBOX)
    password = password_file.read_text()
    TALLY["faults injected"] += 1

    started = time.monotonic()
    try:
        if step == "health" and kind != "password":
            stop = world.standin.exec(
                SANDBOX, "sprite-env", "services", "stop", "opencode"
            )
            assert stop.returncode == 0, stop.stderr
        if kind == "password":
            password_file.write_text("not-the-password\n")
        if kind == "fail":
            world.standin.set_fault(
                "proxy", stderr="Error: proxy refused (502)", times=1
            )
        if kind == "interrupt" and step == "proxy":
            outcome = interrupt(world, "attach", during="proxy", env=env)
        elif kind == "interrupt":
            # The proxy up at once, the server silent: Ctrl-C while health waits.
            waiting = {**env, "SPRITE_STANDIN_LATENCY": "0"}
            waiting["AF_REMOTE_ATTACH_TIMEOUT"] = "30"
            outcome = interrupt(
                world, "attach", during="proxy", env=waiting, settle=1.5
            )
        else:
            outcome = run(world, "attach", env=env)
    finally:
        password_file.write_text(password)
        if step == "health" and kind != "password":
            world.standin.exec(SANDBOX, "sprite-env", "services", "start", "opencode")
    elapsed = time.monotonic() - started

    if kind == "interrupt":
        assert outcome.code == 130
        assert outcome.error == "af-remote: error: interrupted"
    else:
        assert outcome.code == 1
        if kind == "fail":
            assert "sprite proxy exited with 1: Error: proxy refused (502)" in (
                outcome.error
            )
            assert f"sprite proxy -s {SANDBOX} " in outcome.error
        elif kind == "timeout":
            assert "did not answer through sprite proxy within 3s" in outcome.error
            assert f"sprite exec -s {SANDBOX} -- sprite-env services list" in (
                outcome.error
            )
        else:
            assert "refused the password" in outcome.error
            assert elapsed < 3, "a refused password is not worth waiting out"
    assert not out.exists()  # the TUI never started
    assert spawns()[spawn["spawn_id"]] == spawn  # attach changes no record
    assert_nothing_left(world, spawn["session_id"])

    rerun = run(world, "attach", env={**env, "AF_REMOTE_ATTACH_TIMEOUT": "30"})
    assert rerun.code == 0, rerun.stderr
    assert json.loads(out.read_text())["healthy"] is True
    assert_nothing_left(world, spawn["session_id"])


# --- down: abort, destroy ---------------------------------------------------------

DOWN_FAULTS = [
    pytest.param("abort", "fail", id="abort-fails"),
    pytest.param("abort", "transport", id="abort-cut-off"),
    pytest.param("abort", "interrupt", id="abort-interrupted"),
    pytest.param("destroy", "fail", id="destroy-fails"),
    pytest.param("destroy", "timeout", id="destroy-times-out"),
    pytest.param("destroy", "interrupt", id="destroy-interrupted"),
]


def doomed_sprite(world: World, name: str) -> dict[str, Any]:
    """A sprite and a running spawn of it, as `up` records them (no agent: destroy
    needs none)."""
    world.standin.create(name)
    registry = Registry()
    spawn = registry.create_spawn(
        provider="sprites",
        sandbox=name,
        af_remote={"org": None, "project": str(world.project.root)},
    )
    return registry.update_spawn(spawn["spawn_id"], state="running", session_id=None)


@pytest.mark.parametrize(("step", "kind"), DOWN_FAULTS)
def test_down(world: World, step: str, kind: str) -> None:
    if step == "abort":
        up = run(world, "up", "--json", "--prompt", f"to abort: {kind}")
        assert up.code == 0, up.stderr
        spawn = spawns()[json.loads(up.stdout)["spawn_id"]]
        args: tuple[str, ...] = ("down", spawn["spawn_id"])
        subcommand = "exec"
    else:
        spawn = doomed_sprite(world, f"af-d-{kind}")
        args = ("down", "--destroy", spawn["spawn_id"])
        subcommand = "destroy"
    TALLY["faults injected"] += 1

    if kind == "interrupt":
        outcome = interrupt(world, *args, during=subcommand)
    else:
        if kind == "transport":
            world.standin.set_fault("exec", kind="transport", after_bytes=0, times=1)
        else:
            stderr = DEADLINE if kind == "timeout" else f"Error: {step} refused (500)"
            world.standin.set_fault(subcommand, stderr=stderr, times=1)
        outcome = run(world, *args)

    after = spawns()[spawn["spawn_id"]]
    assert after["state"] == "running"  # nothing known to have ended
    if kind == "interrupt":
        assert outcome.code == 130
        assert outcome.error == "af-remote: error: interrupted"
        assert "interrupted" in after["last_error"]
    else:
        assert outcome.code == 1
        assert f"to see it yourself: sprite {subcommand} " in outcome.error
        assert after["last_error"]
    assert_nothing_left(world, spawn["spawn_id"])

    rerun = run(world, *args)
    assert rerun.code == 0, rerun.stderr
    assert spawns()[spawn["spawn_id"]]["state"] == "terminated"
    if step == "destroy":
        assert not world.standin.sprite_dir(spawn["provider_sandbox_id"]).exists()
    else:
        (session,) = [s for s in sessions() if s["session_id"] == spawn["session_id"]]
        assert session["status"] == "terminated"
        assert_one_of_each(world, SANDBOX)


# --- concurrency ------------------------------------------------------------------


def test_concurrent_ups_on_one_sprite_lose_nothing(world: World) -> None:
    """Four `up --prompt` at once on the module's sprite: each succeeds or fails
    cleanly, the records parse, none is lost, and there is still one sprite."""
    before = set(spawns())
    environment = {
        **os.environ,
        "PYTHONPATH": str(GLUE),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "af_remote", "up", "--json", "--prompt", f"c{i}"],
            cwd=world.project.root,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outcomes = [(p, *p.communicate(timeout=240)) for p in processes]
    TALLY["records written concurrently (spawns of 4 concurrent ups)"] += 4

    new = {key: spawns()[key] for key in set(spawns()) - before}
    assert len(new) == 4
    succeeded = 0
    for process, stdout, stderr in outcomes:
        if process.returncode == 0:
            succeeded += 1
            spawn = json.loads(stdout)
            assert new[spawn["spawn_id"]]["state"] == "running"
        else:
            assert process.returncode == 1, stderr
            errors = [line for line in stderr.splitlines() if "error:" in line]
            assert len(errors) == 1, stderr
    assert succeeded == sum(s["state"] == "running" for s in new.values())
    failed = [s for s in new.values() if s["state"] != "running"]
    assert all(s["last_error"] for s in failed)
    assert succeeded >= 1
    TALLY["concurrent ups that succeeded (of 4)"] += succeeded
    assert_one_of_each(world, SANDBOX)
    assert {s["session_id"] for s in sessions()} >= {
        s["session_id"] for s in new.values() if s["state"] == "running"
    }
