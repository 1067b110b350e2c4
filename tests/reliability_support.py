"""Shared pieces of the reliability and security suite: one sprite stand-in and one
project per module (an ``up`` is the slow part), an argv sampler, a finder for
processes a run left behind, and the tally of inputs, faults and leaks that the
suite prints at the end of the session.
"""

from __future__ import annotations

import collections
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e_support import Project, make_project, opencode_prefix
from fakellm import FakeLLM, echo_last_user_message
from opencode_support import free_port
from standin._common import BIN_DIR
from standin.fixture import Standin, standin_supported

# --- the tally ----------------------------------------------------------------------

TALLY: collections.Counter[str] = collections.Counter()


class _TallyReport:
    """A plugin registered at run time: prints the tally after the test summary."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not TALLY:
            return
        terminalreporter.section("reliability and security tally")
        for name in sorted(TALLY):
            terminalreporter.write_line(f"{name}: {TALLY[name]}")


@pytest.fixture(scope="session", autouse=False)
def tally(request: pytest.FixtureRequest) -> collections.Counter[str]:
    manager = request.config.pluginmanager
    if not manager.has_plugin("af-remote-reliability-tally"):
        manager.register(_TallyReport(), "af-remote-reliability-tally")
    return TALLY


# --- processes ------------------------------------------------------------------------


def cmdlines() -> dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # ended while we looked
    return found


class ArgvSampler:
    """Reads every process's argv over and over, looking for any of ``secrets``.

    Secrets can be added while it runs (a password known only later)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [secret.encode() for secret in secrets]
        self.leaks: list[str] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def add(self, secret: str) -> None:
        self.secrets.append(secret.encode())

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid, cmdline in cmdlines().items():
                for secret in list(self.secrets):
                    if secret in cmdline:
                        self.leaks.append(f"{pid}: {cmdline[:300]!r}")
            self.rounds += 1
            self._stop.wait(0.02)

    def start(self) -> ArgvSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> ArgvSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def sprite_processes(standin_root: Path, subcommand: str) -> list[int]:
    """Live ``sprite SUBCOMMAND`` CLI processes of this stand-in."""
    marker = f"SPRITE_STANDIN_ROOT={standin_root}".encode()
    found = []
    for pid, cmdline in cmdlines().items():
        argv = cmdline.split(b"\0")
        if not any(arg.endswith(b"/sprite") for arg in argv[:2]):
            continue
        if subcommand.encode() not in argv:
            continue
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environment:
            found.append(pid)
    return found


def left_behind(standin_root: Path, *markers: str) -> list[str]:
    """Processes a run should not have left: this stand-in's ``sprite`` CLI (exec,
    proxy, create, destroy), an ``opencode attach`` TUI, and anything whose argv
    names one of ``markers`` (a spawn id, a session id)."""
    marker = f"SPRITE_STANDIN_ROOT={standin_root}".encode()
    found = []
    for pid, cmdline in cmdlines().items():
        if pid == os.getpid():
            continue
        argv = cmdline.split(b"\0")
        is_cli = any(arg.endswith(b"/sprite") for arg in argv[:2]) and any(
            sub in argv for sub in (b"exec", b"x", b"proxy", b"create", b"destroy")
        )
        if is_cli:
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environment:
                found.append(f"{pid}: {cmdline[:200]!r}")
                continue
        named = any(m.encode() in cmdline for m in markers if m)
        if named or (b"opencode" in cmdline and b"attach\0http" in cmdline):
            found.append(f"{pid}: {cmdline[:200]!r}")
    return found


# --- one stand-in and project per module ----------------------------------------------


@dataclass
class World:
    """A sprites project on a stand-in, shared by the tests of one module."""

    root: Path
    standin: Standin
    project: Project
    llm: FakeLLM
    port: int
    sandbox: str
    environment: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_home(self) -> Path:
        return Path(self.environment["XDG_CONFIG_HOME"])

    @property
    def registry_dir(self) -> Path:
        return self.config_home / "aetherflow" / "sessions"


@contextmanager
def sprites_world(
    base: Path,
    *,
    sandbox: str,
    data: dict[str, str] | None = None,
    env_lines: dict[str, str] | None = None,
) -> Iterator[World]:
    """A stand-in, a fake model and a rendered, committed project under ``base``.

    The user's environment (HOME, XDG, git, PATH with the stand-in) is set for the
    whole module; :func:`enter` puts it back over each test's own isolation.
    """
    supported, reason = standin_supported()
    if not supported:
        pytest.skip(reason)
    prefix = opencode_prefix()
    home = base / "home"
    home.mkdir()
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = af-remote tests\n\temail = tests@af-remote.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
    )
    standin_root = base / "sprite-standin"
    standin_root.mkdir()
    owner_lock = standin_root / "owner.lock"
    environment = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(base),
        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPRITE_STANDIN_ROOT": str(standin_root),
        "SPRITE_STANDIN_OWNER_LOCK": str(owner_lock),
    }
    lock_fd = os.open(owner_lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    patch = pytest.MonkeyPatch()
    standin = Standin(standin_root, patch)
    try:
        for name in list(os.environ):
            if name.startswith(("AF_REMOTE_", "SPRITE_STANDIN_")) and not (
                name.startswith(("AF_REMOTE_TEST_", "AF_REMOTE_VENV"))
            ):
                patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        standin.login()
        standin.seed_new_homes(prefix, ".af-remote/opencode")
        port = free_port()
        with FakeLLM(reply=echo_last_user_message) as llm:
            project = make_project(
                base,
                "sprites",
                llm.base_url,
                data={"server_port": str(port), "sandbox": sandbox, **(data or {})},
                env_lines=env_lines,
            )
            yield World(base, standin, project, llm, port, sandbox, environment)
    finally:
        try:
            standin.shutdown()
        finally:
            patch.undo()
            os.close(lock_fd)


FAKE_TUI = """#!/usr/bin/env bash
# Stands in for `opencode attach URL --session ID`: asks the server's health
# through the URL with the password from the environment (never from argv).
printf 'user = "opencode:%s"\\n' "$OPENCODE_SERVER_PASSWORD" |
  curl --silent --fail --max-time 10 --config - "$2/global/health" >"$AF_TEST_TUI_OUT"
"""


def fake_tui(base: Path) -> Path:
    """A folder with the fake ``opencode`` TUI, to put first on PATH."""
    folder = base / "tui-bin"
    folder.mkdir()
    (folder / "opencode").write_text(FAKE_TUI)
    (folder / "opencode").chmod(0o755)
    return folder


def enter(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """Put the module's environment back over the test's own isolation."""
    for name, value in world.environment.items():
        monkeypatch.setenv(name, value)
    world.standin.monkeypatch = monkeypatch
    return world
