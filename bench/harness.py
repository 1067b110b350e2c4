"""What every benchmark stands on: an isolated user environment, the sprite stand-in
outside pytest, af-remote run as a real process with its progress timestamped, and
the arithmetic (medians, CPU time of process trees) the figures are made of.

Nothing here knows about targets; ``run.py`` holds the benchmarks and the report.
"""

from __future__ import annotations

import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
GLUE = CHECKOUT / "glue"
TESTS = CHECKOUT / "tests"
# The test helpers (stand-in, fake model, project maker) are reused as they are.
for _path in (GLUE, TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import pytest  # noqa: E402  (the stand-in's fixture class takes its MonkeyPatch)

import e2e_support  # noqa: E402
from standin._common import BIN_DIR  # noqa: E402
from standin.fixture import Standin, standin_supported  # noqa: E402

# Resolved by e2e_support at import, before any benchmark points HOME elsewhere.
OPENCODE_PREFIX = e2e_support._CACHED_PREFIX
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STANDIN_KNOBS = (
    "LATENCY",
    "IDLE_SECONDS",
    "COLD_SECONDS",
    "NOISE",
    "SCAN_AFTER_DASHDASH",
    "UPLOAD_LIMIT",
)


class BenchError(Exception):
    """A benchmark could not run (a missing tool, a failed command)."""


# --- statistics ----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """min-max of a series, for the report's reader to judge the noise."""
    return f"{min(values):.3f}-{max(values):.3f}"


# --- an isolated user ------------------------------------------------------------


@dataclass
class Scratch:
    """A temporary directory holding this benchmark's HOME, XDG dirs and projects."""

    root: Path
    home: Path
    env: pytest.MonkeyPatch


@contextmanager
def isolated(label: str) -> Iterator[Scratch]:
    """A fresh HOME and XDG directories in a temp dir, removed afterwards.

    Like the tests' autouse fixture: af-remote's and git's own variables are dropped
    so that nothing of this machine's user changes what is measured.
    """
    with (
        tempfile.TemporaryDirectory(
            prefix=f"af-bench-{label}-", ignore_cleanup_errors=True
        ) as directory,
        pytest.MonkeyPatch.context() as env,
    ):
        root = Path(directory)
        for name in list(os.environ):
            leaky = name.startswith(("AF_REMOTE_", "GIT_"))
            if leaky and not name.startswith(("AF_REMOTE_TEST_", "AF_REMOTE_VENV")):
                env.delenv(name)
        home = root / "home"
        home.mkdir()
        env.setenv("HOME", str(home))
        for variable, relative in (
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_STATE_HOME", ".local/state"),
        ):
            env.setenv(variable, str(home / relative))
        gitconfig = home / ".gitconfig"
        gitconfig.write_text(
            "[user]\n\tname = af-remote bench\n\temail = bench@af-remote.invalid\n"
            "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n",
            encoding="utf-8",
        )
        env.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        env.setenv("GIT_CONFIG_NOSYSTEM", "1")
        env.setenv("GIT_CEILING_DIRECTORIES", str(root))
        yield Scratch(root, home, env)


# --- the sprite stand-in ------------------------------------------------------------


def require_opencode() -> Path:
    if not (OPENCODE_PREFIX / "bin" / "opencode").is_file():
        raise BenchError(
            f"OpenCode is not installed at {OPENCODE_PREFIX}; bin/bench installs it"
        )
    return OPENCODE_PREFIX


@contextmanager
def sprite_standin(scratch: Scratch, *, latency: float) -> Iterator[Standin]:
    """The stand-in on PATH with ``latency`` seconds per `sprite` invocation.

    New sprites get the cached OpenCode install hard-linked into their home, as in
    the end-to-end tests. On the way out every supervisor (and with it every process
    in every sandbox) and every proxy is stopped, whatever happened.
    """
    supported, reason = standin_supported()
    if not supported:
        raise BenchError(reason)
    root = scratch.root / "sprite-standin"
    root.mkdir()
    owner_lock = root / "owner.lock"
    lock_fd = os.open(owner_lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        env = scratch.env
        env.setenv("PATH", f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
        env.setenv("SPRITE_STANDIN_ROOT", str(root))
        env.setenv("SPRITE_STANDIN_OWNER_LOCK", str(owner_lock))
        for knob in STANDIN_KNOBS:
            env.delenv(f"SPRITE_STANDIN_{knob}", raising=False)
        standin = Standin(root, env)
        standin.login()
        standin.set_latency(latency)
        standin.seed_new_homes(require_opencode(), ".af-remote/opencode")
        try:
            yield standin
        finally:
            standin.shutdown()
    finally:
        # Anything still watching the lock stops by itself once it is released.
        os.close(lock_fd)


def supervisor_root_pid(standin: Standin, sprite: str) -> int | None:
    """The sandbox's outermost process: every process in it descends from this."""
    info_path = standin.sprite_dir(sprite) / "supervisor.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("unshare_pid") or info.get("pid") or 0)
    return pid or None


def exec_seconds(invocation: Mapping[str, Any]) -> float:
    return float(invocation["end"]) - float(invocation["start"])


def invocations_between(
    standin: Standin, started: float, ended: float, sprite: str | None = None
) -> list[dict[str, Any]]:
    """`sprite` invocations that began within [started, ended] (epoch seconds)."""
    found = []
    for record in standin.invocations():
        if not started <= float(record["start"]) <= ended:
            continue
        argv = record["argv"]
        if sprite is not None and sprite not in argv:
            continue
        found.append(record)
    return found


# --- af-remote as a real process -----------------------------------------------


@dataclass
class Run:
    """One af-remote process: what it printed, when, and how long it took."""

    argv: list[str]
    returncode: int
    wall: float
    started_at: float  # epoch seconds, to match the stand-in's invocation log
    stdout: str
    progress: list[tuple[float, str]] = field(default_factory=list)

    @property
    def ended_at(self) -> float:
        return self.started_at + self.wall

    def check(self) -> Run:
        if self.returncode != 0:
            tail = "\n".join(line for _, line in self.progress[-15:])
            raise BenchError(f"{' '.join(self.argv)} exited {self.returncode}:\n{tail}")
        return self


def af_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(GLUE),
        "ANTHROPIC_API_KEY": e2e_support.FAKE_API_KEY,
        **(extra or {}),
    }


def start_af(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], float, float]:
    argv = [sys.executable, "-m", "af_remote", *args]
    started_at = time.time()
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=af_environment(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    return process, started, started_at


def finish_af(process: subprocess.Popen[str], started: float, started_at: float) -> Run:
    """Collect a started af-remote: its progress lines timestamped as they arrive."""
    stdout: list[str] = []
    reader = threading.Thread(
        target=lambda: stdout.append(process.stdout.read() if process.stdout else ""),
        daemon=True,
    )
    reader.start()
    progress = []
    for line in process.stderr or ():
        progress.append((time.monotonic() - started, line.rstrip("\n")))
    returncode = process.wait()
    wall = time.monotonic() - started
    reader.join()
    return Run(
        argv=[str(part) for part in process.args],  # type: ignore[union-attr]
        returncode=returncode,
        wall=wall,
        started_at=started_at,
        stdout="".join(stdout),
        progress=progress,
    )


def run_af(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Run:
    return finish_af(*start_af(cwd, *args, env=env))


def run_parallel(
    cwd: Path, commands: Sequence[tuple[Sequence[str], Mapping[str, str]]]
) -> list[Run]:
    """Start every af-remote at once and collect them, each on its own thread."""
    started = [start_af(cwd, *args, env=env) for args, env in commands]
    results: list[Run | None] = [None] * len(started)

    def collect(index: int) -> None:
        results[index] = finish_af(*started[index])

    threads = [
        threading.Thread(target=collect, args=(index,)) for index in range(len(started))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [result for result in results if result is not None]


# --- CPU time -------------------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and its reaped children)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: split after the last ")".
        fields = text[text.rindex(")") + 2 :].split()
        parent = int(fields[1])
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        stats[int(entry.name)] = (
            parent,
            (utime + stime + cutime + cstime) / CLOCK_TICKS,
        )
    return stats


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU time used so far by the processes under ``roots``, dead ones included.

    A process's own time plus the time of the children it has reaped; the sandbox
    supervisor is PID 1 of its sandbox and reaps every orphan, so only processes
    that left the tree altogether are missed.
    """
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, pending = 0.0, [pid for pid in roots if pid in stats]
    while pending:
        pid = pending.pop()
        total += stats[pid][1]
        pending.extend(children.get(pid, []))
    return total


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (af-remote and what it ran)."""
    times = os.times()
    return times.children_user + times.children_system
