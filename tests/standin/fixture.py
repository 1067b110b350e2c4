"""Pytest fixture around the sprite stand-in.

Use it from a test module with::

    from standin import fixture as standin_fixture
    from standin.fixture import Standin

    sprite_standin = standin_fixture.sprite_standin

    def test_something(sprite_standin: Standin) -> None:
        sprite_standin.create("demo")
        ...

The fixture puts the stand-in's `sprite` first on PATH, logs in with one org, and at
teardown stops every supervisor and proxy it started, even when the test failed.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from standin._common import (
    BIN_DIR,
    SpriteState,
    read_json,
    stop_supervisor,
    write_json,
)

DEFAULT_ORG = "standin-org"
DEFAULT_ORG_ID = "o7k2x9q4"


@functools.lru_cache(maxsize=1)
def standin_supported() -> tuple[bool, str]:
    """Whether this machine lets the stand-in build sandboxes, and if not why."""
    if not sys.platform.startswith("linux"):
        return False, "the sprite stand-in needs Linux namespaces"
    if os.geteuid() != 0:
        return False, "the sprite stand-in needs root for mount and PID namespaces"
    for tool in ("unshare", "nsenter", "curl", "cp"):
        if shutil.which(tool) is None:
            return False, f"the sprite stand-in needs {tool} on PATH"
    if not hasattr(os, "pidfd_open"):
        return False, "the sprite stand-in needs os.pidfd_open (Linux 5.3+)"
    probe = subprocess.run(
        [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "mount",
            "--bind",
            "/tmp",
            "/tmp",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        detail = probe.stderr.strip().splitlines()[-1:] or ["no output"]
        return False, f"unshare/mount not permitted here: {detail[0]}"
    return True, ""


class Standin:
    """One stand-in root: its sprites, knobs and logs."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.org = DEFAULT_ORG
        self.org_id = DEFAULT_ORG_ID
        self.bin_dir = BIN_DIR

    # --- running the CLI ------------------------------------------------------------

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `sprite ARGS` with the current environment and capture its output."""
        result = subprocess.run(
            ["sprite", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"sprite {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def create(self, name: str) -> None:
        self.run("create", "--skip-console", name, check=True)

    def exec(
        self, name: str, *command: str, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "-s", name, "--", *command, **kwargs)

    # --- account ---------------------------------------------------------------------

    def login(self, *, with_org: bool = True) -> None:
        """Log in; with_org=False reproduces an account without organizations."""
        org_dir = self.root / "orgs" / self.org
        if with_org:
            (org_dir / "sprites").mkdir(parents=True, exist_ok=True)
            write_json(org_dir / "org.json", {"name": self.org, "id": self.org_id})
        elif (org_dir / "org.json").exists():
            (org_dir / "org.json").unlink()
        write_json(
            self.root / "auth.json", {"logged_in": True, "current_org": self.org}
        )

    def logout(self) -> None:
        (self.root / "auth.json").unlink(missing_ok=True)

    # --- knobs -----------------------------------------------------------------------

    def set_fault(
        self,
        subcommand: str,
        *,
        kind: str = "fail",
        exit_code: int = 1,
        stderr: str | None = None,
        stdout: str = "",
        times: int | None = None,
        retry_after_seconds: int = 30,
        after_seconds: float | None = None,
        after_bytes: int | None = None,
    ) -> None:
        """Make `sprite SUBCOMMAND` fail (times=None: every time; N: the next N).

        kind "fail" exits with exit_code and stderr; "rate_limit" (create) answers 429
        sprite_creation_rate_limited; "transport" (exec) runs the command, then kills it
        after after_seconds or after after_bytes of output and exits 1.
        """
        fault: dict[str, Any] = {
            "kind": kind,
            "exit_code": exit_code,
            "stdout": stdout,
            "times": times,
            "retry_after_seconds": retry_after_seconds,
        }
        if stderr is not None:
            fault["stderr"] = stderr
        if after_seconds is not None:
            fault["after_seconds"] = after_seconds
        if after_bytes is not None:
            fault["after_bytes"] = after_bytes
        faults = read_json(self.root / "faults.json", {}) or {}
        faults[subcommand] = fault
        write_json(self.root / "faults.json", faults)

    def clear_faults(self) -> None:
        (self.root / "faults.json").unlink(missing_ok=True)

    def set_latency(self, seconds: float) -> None:
        self.monkeypatch.setenv("SPRITE_STANDIN_LATENCY", str(seconds))

    def set_idle(self, seconds: float) -> None:
        """Idle window before pausing; applies to sprites booted afterwards."""
        self.monkeypatch.setenv("SPRITE_STANDIN_IDLE_SECONDS", str(seconds))

    def set_cold(self, seconds: float) -> None:
        """Time warm before going cold; applies to sprites booted afterwards."""
        self.monkeypatch.setenv("SPRITE_STANDIN_COLD_SECONDS", str(seconds))

    def set_noise(self, enabled: bool) -> None:
        self.monkeypatch.setenv("SPRITE_STANDIN_NOISE", "1" if enabled else "0")

    def seed_new_homes(self, src: Path, dest: str, *, hardlink: bool = True) -> None:
        """Copy SRC into HOME/DEST of every sprite created from now on.

        hardlink=True uses `cp -al` (instant for a large install) and falls back to a
        copy across filesystems; files are then shared, so do not edit them in place.
        """
        seeds = read_json(self.root / "seed.json", []) or []
        seeds.append({"src": str(src), "dest": dest, "hardlink": hardlink})
        write_json(self.root / "seed.json", seeds)

    # --- observing -------------------------------------------------------------------

    def invocations(self) -> list[dict[str, Any]]:
        path = self.root / "invocations.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def count(self, subcommand: str | None = None) -> int:
        """Invocations of `sprite SUBCOMMAND` (aliases count as their command)."""
        return sum(
            1
            for record in self.invocations()
            if subcommand is None or record["subcommand"] == subcommand
        )

    def state(self, name: str) -> SpriteState:
        return SpriteState(self.root, self.org, name)

    def sprite_dir(self, name: str) -> Path:
        return self.state(name).dir

    def home(self, name: str) -> Path:
        """Host path of the sprite's /home/sprite."""
        return self.state(name).home

    def runtime(self, name: str) -> Path:
        """Host path of the sprite's /.sprite."""
        return self.state(name).runtime

    def power(self, name: str) -> str:
        """running, warm (paused) or cold."""
        return self.state(name).power()

    def is_paused(self, name: str) -> bool:
        return self.power(name) in ("warm", "cold")

    @staticmethod
    def wait_for(
        predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()

    # --- teardown --------------------------------------------------------------------

    def supervisor_pids(self) -> list[int]:
        pids = []
        for info in self.root.glob("orgs/*/sprites/*/supervisor.json"):
            pid = int((read_json(info, {}) or {}).get("pid", 0))
            if pid and Path(f"/proc/{pid}").exists():
                pids.append(pid)
        return pids

    def proxy_pids(self) -> list[int]:
        return [
            int(p.name) for p in (self.root / "proxies").glob("*") if p.name.isdigit()
        ]

    def shutdown(self) -> None:
        """Stop every supervisor (and so every sandbox process) and every proxy."""
        for sprite_json in self.root.glob("orgs/*/sprites/*/sprite.json"):
            sprite_dir = sprite_json.parent
            state = SpriteState(
                self.root, sprite_dir.parent.parent.name, sprite_dir.name
            )
            stop_supervisor(state)
        for pid in self.proxy_pids():
            _terminate(pid, marker=b"proxy")
            (self.root / "proxies" / str(pid)).unlink(missing_ok=True)


def _terminate(pid: int, *, marker: bytes, timeout: float = 3.0) -> None:
    """SIGTERM then SIGKILL a process, if it still is the one we started."""
    try:
        if marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
        pidfd = os.pidfd_open(pid)
    except (FileNotFoundError, ProcessLookupError):
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            os.kill(pid, sig)
            if select.select([pidfd], [], [], timeout)[0]:
                return
    except ProcessLookupError:
        return
    finally:
        os.close(pidfd)


@pytest.fixture
def sprite_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Standin]:
    supported, reason = standin_supported()
    if not supported:
        pytest.skip(reason)
    root = tmp_path / "sprite-standin"
    root.mkdir()
    owner_lock = root / "owner.lock"
    lock_fd = os.open(owner_lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    monkeypatch.setenv("PATH", f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SPRITE_STANDIN_ROOT", str(root))
    monkeypatch.setenv("SPRITE_STANDIN_OWNER_LOCK", str(owner_lock))
    for knob in (
        "LATENCY",
        "IDLE_SECONDS",
        "COLD_SECONDS",
        "NOISE",
        "SCAN_AFTER_DASHDASH",
        "UPLOAD_LIMIT",
    ):
        monkeypatch.delenv(f"SPRITE_STANDIN_{knob}", raising=False)
    standin = Standin(root, monkeypatch)
    standin.login()
    try:
        yield standin
    finally:
        try:
            standin.shutdown()
        finally:
            # Anything still watching the lock (a supervisor of a sprite whose files
            # were removed, a stray proxy) stops by itself once it is released.
            os.close(lock_fd)
