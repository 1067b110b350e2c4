"""af-remote's benchmarks: start-up, the critical path of ``up``, fan-out, attach,
and a bootstrap re-run, measured side by side in one run and written up as a table.

    bin/bench                      everything; writes docs/performance.md
    bin/bench --only startup,up    some of it (the doc is written only for a full run)

Figures are ratios or differences of things measured in the same run, because the
machines this runs on are shared and noisy; absolute times are shown for context.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import harness
from harness import (
    CHECKOUT,
    BenchError,
    Run,
    exec_seconds,
    invocations_between,
    median,
    spread,
)

import e2e_support
from fakellm import FakeLLM, echo_last_user_message
from opencode_support import UNREACHABLE_NPM_REGISTRY, Tmux, free_port
from standin.fixture import Standin

LATENCY = 0.3  # seconds the stand-in sleeps in every `sprite` invocation
STARTUP_ROUNDS = 20
LS_RECORDS = 500
SEQUENTIAL_AGENTS = 8
FANOUT_AGENTS = 8
RERUNS = 3
ATTACH_ROUNDS = 3
SANDBOX = "af-bench"
ATTACH_MARKER = "bench-attach-marker-7391"
DOC = CHECKOUT / "docs" / "performance.md"


@dataclass
class Figure:
    """One row of the table."""

    name: str
    measured: str
    target: str
    met: bool | None  # None: shown for context, no target

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT MET", None: "-"}[self.met]


@dataclass
class Section:
    """One benchmark's rows, how it was measured, and its raw numbers."""

    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def add(self, figure: Figure, *, reason: str = "") -> None:
        self.figures.append(figure)
        if figure.met is False and reason:
            self.misses.append(f"**{figure.name}**: {reason}")


# --- 1. start-up -------------------------------------------------------------------


def af_remote_command() -> tuple[list[str], str]:
    """How a user runs af-remote with this interpreter: its console script if
    installed beside it, else ``python -m af_remote``."""
    script = Path(sys.executable).parent / "af-remote"
    if script.is_file() and os.access(script, os.X_OK):
        shown = (
            script.relative_to(CHECKOUT) if script.is_relative_to(CHECKOUT) else script
        )
        return [str(script)], f"console script `{shown}` that pip installed"
    return [sys.executable, "-m", "af_remote"], "`python -m af_remote`"


def write_spawn_records(count: int) -> None:
    """``count`` spawns in Aetherflow's registry, in the shape af-remote writes.

    One record is made through the registry itself and then copied, because
    ``count`` separate locked writes would take longer than the whole benchmark.
    """
    from af_remote.records import Registry

    registry = Registry()
    template = registry.create_spawn(
        provider="sprites",
        sandbox="af-template",
        af_remote={"org": None, "project": "/srv/project", "server_port": 8080},
    )
    records = []
    for index in range(count):
        state = "terminated" if index % 5 == 0 else "running"
        record = json.loads(json.dumps(template))
        record.update(
            spawn_id=f"spw_bench{index:07d}",
            provider_sandbox_id=f"af-project-{index % 7}",
            session_id=f"ses_bench{index:020d}",
            state=state,
            created_at=f"2026-01-{1 + index % 28:02d}T12:{index % 60:02d}:00.000000Z",
        )
        record["af_remote"].update(
            title=f"agent number {index}", workdir=f"/w/{index}", branch="af/x"
        )
        records.append(record)
    document = {"schema_version": 1, "records": records}
    registry.spawns_path.write_text(json.dumps(document, indent=2))
    registry.spawns_path.chmod(0o600)


def time_command(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {result.stderr.decode()[-500:]}")
    return elapsed


def import_sites(
    argv: Sequence[str], cwd: Path, env: dict[str, str]
) -> dict[str, float]:
    """Who imports what, by cumulative ms: "af_remote.ui > logging", or "shutil"
    for an import made outside af-remote's modules (e.g. at run time by argparse).
    """
    command = argv[1:] if argv[0] == sys.executable else argv
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # -X importtime prints a module after its imports, indented two spaces deeper.
    pending: list[tuple[int, str, float]] = []
    sites: dict[str, float] = {}
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        if not parts[1].strip().isdigit():
            continue
        depth = (len(parts[2]) - len(parts[2].lstrip()) - 1) // 2
        name, cumulative = parts[2].strip(), int(parts[1]) / 1000
        children = [item for item in pending if item[0] > depth]
        pending = [item for item in pending if item[0] <= depth]
        if name.startswith("af_remote"):
            for child_depth, child, child_ms in children:
                if child_depth == depth + 1 and not child.startswith("af_remote"):
                    sites[f"{name} > {child}"] = child_ms
        elif depth == 0:
            sites[name] = cumulative
        pending.append((depth, name, cumulative))
    return sites


def import_costs(
    argv: Sequence[str], cwd: Path, env: dict[str, str]
) -> list[tuple[str, float]]:
    """What a command imports beyond a bare interpreter, slowest first (median ms)."""
    bare = set(import_sites([sys.executable, "-c", "pass"], cwd, env))
    samples: dict[str, list[float]] = {}
    for _ in range(5):
        for site, ms in import_sites(argv, cwd, env).items():
            if site not in bare:
                samples.setdefault(site, []).append(ms)
    ranked = sorted(samples.items(), key=lambda item: -median(item[1]))
    return [(site, median(values)) for site, values in ranked]


def startup_reason(imports: list[tuple[str, float]]) -> str:
    ours = sum(ms for site, ms in imports if site.startswith("af_remote"))
    others = sum(ms for site, ms in imports if not site.startswith("af_remote"))
    listed = ", ".join(f"{site} {ms:.1f} ms" for site, ms in imports[:5])
    text = (
        "what it adds to a bare interpreter is mostly imports; the largest (median "
        f"cumulative by import site): {listed}. Sites without `af_remote >` "
        f"({others:.0f} ms in all, against {ours:.0f} ms under af-remote's "
        "modules) are imported outside them: `re` by the console script pip "
        "writes and by argparse, `shutil` and `locale` by argparse as it formats "
        "help. "
    )
    if others > ours:
        return text + (
            "Deferring more of af-remote's own imports cannot meet it; printing the "
            "top-level help without argparse building and formatting the whole "
            "parser (help text made at build time, each command's parser built "
            "only when that command runs) would remove most of what is left."
        )
    return text + (
        "Importing what the `af_remote >` sites name only in the commands that use "
        "it is the change that would meet it."
    )


def bench_startup(rounds: int = STARTUP_ROUNDS) -> Section:
    section = Section(
        "Start-up",
        f"`--help` and `ls` (with {LS_RECORDS} spawn records, 4 in 5 running) against "
        "`python -c pass` on the same interpreter, in a fresh HOME. The three "
        f"commands run interleaved, {rounds} rounds after 2 warm-up rounds, in a "
        "rotating order; each figure is the ratio of medians.",
    )
    command, how = af_remote_command()
    with harness.isolated("startup") as scratch:
        write_spawn_records(LS_RECORDS)
        env = harness.af_environment()
        variants = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "af-remote --help": [*command, "--help"],
            "af-remote ls": [*command, "ls"],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(rounds + 2):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                elapsed = time_command(variants[name], scratch.root, env)
                if round_ >= 2:
                    times[name].append(elapsed)
        base = median(times["python -c pass"])
        section.details.append(f"af-remote ran as the {how}.")
        section.details.append("")
        section.details += table(
            ["command", "median ms", "min-max s", "ratio"],
            [
                [
                    name,
                    f"{median(values) * 1000:.1f}",
                    spread(values),
                    f"{median(values) / base:.2f}x",
                ]
                for name, values in times.items()
            ],
        )
        for name, target in (("af-remote --help", 2.0), ("af-remote ls", 2.5)):
            ratio = median(times[name]) / base
            imports = import_costs(variants[name], scratch.root, env)
            section.details.append("")
            listed = ", ".join(f"{site} {ms:.1f} ms" for site, ms in imports[:7])
            section.details.append(
                f"Largest imports of `{name}` (median cumulative): {listed}."
            )
            section.add(
                Figure(
                    f"`{name}` vs `python -c pass`",
                    f"{ratio:.2f}x ({median(times[name]) * 1000:.0f} vs "
                    f"{base * 1000:.0f} ms)",
                    f"<= {target:g}x",
                    ratio <= target,
                ),
                reason=startup_reason(imports),
            )
    return section


# --- 2 and 5. the critical path of up, a re-run; 3b. agents one after another ------


@dataclass
class UpRun:
    """One ``af-remote up``, with the sandbox's share of its time."""

    run: Run  # with -v, so that each native command's launch shows as a line
    invocations: list[dict[str, Any]]

    @property
    def count(self) -> int:
        return len(self.invocations)

    @property
    def exec_time(self) -> float:
        return sum(
            exec_seconds(i) for i in self.invocations if i["subcommand"] == "exec"
        )

    @property
    def bootstrap(self) -> float:
        """The bootstrap's own time: its `sprite exec`, less the injected latency."""
        execs = [i for i in self.invocations if i["subcommand"] == "exec"]
        return self.exec_time - LATENCY * len(execs)

    @property
    def overhead(self) -> float:
        return self.run.wall - self.bootstrap - LATENCY * self.count

    @property
    def create_work(self) -> float:
        """The stand-in's time in `sprite create` beyond the latency."""
        creates = [i for i in self.invocations if i["subcommand"] == "create"]
        return sum(exec_seconds(i) - LATENCY for i in creates)

    @property
    def launches(self) -> list[float]:
        """When af-remote launched each `sprite` (its -v log line), from its start."""
        return [
            offset
            for offset, line in self.run.progress
            if line.startswith("af-remote: $ sprite ")
        ]

    def _relative(self, epoch: float) -> float:
        return epoch - self.run.started_at

    @property
    def standin_starts(self) -> float:
        """From each launch to the moment the stand-in logs its start: the start-up
        of a Python script behind a pyenv shim, which a Go binary does not pay."""
        if len(self.launches) != self.count:
            return 0.0
        return sum(
            self._relative(float(call["start"])) - launched
            for call, launched in zip(self.invocations, self.launches, strict=True)
        )

    @property
    def after_last_call(self) -> float:
        if not self.invocations:
            return self.run.wall
        return self.run.wall - self._relative(float(self.invocations[-1]["end"]))

    @property
    def own(self) -> float:
        """af-remote's share: until the first launch, from each invocation's end to
        the next launch, and from the last end to the exit."""
        return self.overhead - self.create_work - self.standin_starts

    @property
    def steps(self) -> list[tuple[float, str]]:
        """The bootstrap's steps as af-remote showed them (not the -v echo)."""
        return [
            (offset, line)
            for offset, line in self.run.progress
            if "/10 " in line and not line.startswith("af-remote:")
        ]

    def seen(self, fragment: str) -> float | None:
        return next((t for t, line in self.steps if fragment in line), None)

    @property
    def steps_span(self) -> float | None:
        """From the first to the last step line: the bootstrap seen from outside."""
        first, last = self.seen("1/10"), self.seen("10/10")
        return None if first is None or last is None else last - first

    def step_time(self, start: str, end: str) -> float | None:
        begun, ended = self.seen(start), self.seen(end)
        return None if begun is None or ended is None else ended - begun


def up(standin: Standin, cwd: Path, *args: str) -> UpRun:
    run = harness.run_af(cwd, "up", *args, "--json", "-v").check()
    return UpRun(run, invocations_between(standin, run.started_at, run.ended_at))


def up_row(label: str, item: UpRun) -> list[str]:
    span = item.steps_span
    return [
        label,
        f"{item.run.wall:.2f}",
        " ".join(i["subcommand"] for i in item.invocations),
        f"{item.bootstrap:.2f}",
        "-" if span is None else f"{span:.2f}",
        f"{item.overhead:.2f}",
        f"{item.create_work:.2f}",
        f"{item.standin_starts:.2f}",
        f"{item.own:.2f}",
    ]


UP_COLUMNS = [
    "run",
    "wall s",
    "sprite calls",
    "bootstrap s",
    "steps span s",
    "glue overhead s",
    "of which create s",
    "stand-in start-ups s",
    "af-remote's own s",
]


def bench_up_and_attach(project_maker: Callable[..., Any]) -> list[Section]:
    critical = Section(
        "Critical path of `up`",
        f"The sprite stand-in sleeps {LATENCY:g} s at the start of every `sprite` "
        "invocation (a round trip to the provider). Invocations are read from the "
        "stand-in's log (`invocations.jsonl`) between the start and the end of the "
        "`up` process; all of them come before the session id, which `up` prints "
        "last. **Bootstrap time** is the `sprite exec` invocation's duration in that "
        f"log less the {LATENCY:g} s latency: the time inside the sandbox, including "
        "the stand-in's upload and process entry. **Glue overhead** = wall time of "
        f"`af-remote up` - bootstrap time - invocations x {LATENCY:g} s. That "
        "formula also counts two costs of the stand-in, shown in their own columns: "
        "its work in `create` beyond the latency, and the start-up of each `sprite` "
        "process (a Python script behind a pyenv shim here; the real CLI is a Go "
        "binary whose time is the round trip the latency stands for). af-remote "
        "runs with `-v`, which logs each native command as it is launched; the "
        "bench timestamps those lines, so a start-up is the time from a launch to "
        "the start the stand-in logs. The target is judged on **af-remote's own** "
        "share: from its start to the first launch, from each invocation's end to "
        "the next launch, and from the last end to its exit. "
        "*Steps span* (first to last progress line as af-remote printed them) is a "
        "cross-check of the bootstrap time seen from outside.",
    )
    sequential = Section(
        f"{SEQUENTIAL_AGENTS} agents in one sprite, one after another",
        f"`up --prompt` {SEQUENTIAL_AGENTS} times in the same project and sprite; the "
        "first creates the sprite. Each later agent should cost one `sprite exec` "
        "plus the creation of its session (timed from the bootstrap's `creating "
        "the session` line to the next one).",
    )
    rerun = Section(
        "Bootstrap re-run",
        f"`up` without a prompt on the sprite that already runs everything, {RERUNS} "
        "times; sandbox time as above (exec duration less latency), median.",
    )
    attach = Section(
        "Attach",
        "Time from starting the command in a tmux pane (200x50) until the session's "
        "first message shows on screen (the screen is polled every 0.1 s), for "
        "`af-remote attach SPAWN` and for `opencode attach URL --session ID` "
        "straight at the same server (the stand-in shares the host's network). "
        f"One warm-up each, then {ATTACH_ROUNDS} interleaved rounds; medians. The "
        "proxy's start is `sprite proxy` launched alone until `GET /global/health` "
        "answers through it (includes one stand-in latency).",
    )
    with (
        harness.isolated("up") as scratch,
        FakeLLM(reply=echo_last_user_message) as llm,
        harness.sprite_standin(scratch, latency=LATENCY) as standin,
    ):
        port = free_port()
        project = project_maker(
            scratch.root,
            "sprites",
            llm.base_url,
            data={"server_port": str(port), "sandbox": SANDBOX},
        )
        runs = []
        for index in range(SEQUENTIAL_AGENTS):
            prompt = ATTACH_MARKER if index == 0 else f"bench agent {index + 1}"
            runs.append(up(standin, project.root, "--prompt", prompt))
        reruns = [up(standin, project.root) for _ in range(RERUNS)]
        report_critical(critical, runs)
        report_sequential(sequential, runs)
        report_rerun(rerun, reruns)
        first = json.loads(runs[0].run.stdout)
        measure_attach(attach, standin, project.root, first, port)
    return [critical, sequential, rerun, attach]


def report_critical(section: Section, runs: list[UpRun]) -> None:
    fresh, existing = runs[0], runs[1:]
    later_counts = [item.count for item in existing]
    section.add(
        Figure(
            "`up` invocations, fresh sprite",
            f"{fresh.count} ({' '.join(i['subcommand'] for i in fresh.invocations)})",
            "<= 2",
            fresh.count <= 2,
        ),
        reason="more than create and exec on the critical path.",
    )
    section.add(
        Figure(
            "`up` invocations, existing sprite",
            f"{max(later_counts)} (max of {len(existing)} runs)",
            "<= 1",
            max(later_counts) <= 1,
        ),
        reason="more than one exec on the critical path.",
    )
    for label, items in (("fresh sprite", [fresh]), ("existing sprite", existing)):
        before = median([item.launches[0] for item in items if item.launches])
        after = median([item.after_last_call for item in items])
        overhead_reason = (
            f"of af-remote's own share, {before:.2f} s pass before its first native "
            "command (interpreter start-up, imports, settings, the spawn record) "
            f"and {after:.2f} s after its last `sprite` call (records, output); "
            "see the timeline. Cutting the start-up of `up` (what it imports "
            "before it runs anything: `python -X importtime -m af_remote up`) is "
            "the change that would meet it."
        )
        own = median([item.own for item in items])
        overhead = median([item.overhead for item in items])
        starts = median([item.standin_starts for item in items])
        create = median([item.create_work for item in items])
        section.add(
            Figure(
                f"glue overhead, {label}",
                f"{own:.2f} s af-remote's own (formula: {overhead:.2f} s = own + "
                f"{starts:.2f} s stand-in start-ups"
                + (f" + {create:.2f} s stand-in create" if create else "")
                + (")" if len(items) == 1 else f"; medians of {len(items)})"),
                "< 0.5 s",
                own < 0.5,
            ),
            reason=overhead_reason,
        )
    section.details += table(
        UP_COLUMNS,
        [up_row(f"agent {n}", item) for n, item in enumerate(runs, start=1)],
    )
    section.details += ["", *timeline("agent 2", runs[1])]


def timeline(label: str, item: UpRun) -> list[str]:
    """Where af-remote's own time goes: its -v native-command lines, timestamped."""
    events: list[tuple[float, str]] = []
    for offset, line in item.run.progress:
        if line.startswith("af-remote: $ "):
            command = line.removeprefix("af-remote: $ ")
            shown = command if len(command) <= 60 else command[:57] + "..."
            events.append((offset, f"{offset:.2f} launch `{shown}`"))
    for call in item.invocations:
        begun = float(call["start"]) - item.run.started_at
        ended = float(call["end"]) - item.run.started_at
        text = f"{begun:.2f}-{ended:.2f} the stand-in runs `{call['subcommand']}`"
        events.append((begun, text))
    events.append((item.run.wall, f"{item.run.wall:.2f} af-remote exits"))
    return [
        f"Timeline of {label} (seconds from the start of `af-remote up`; native "
        "commands as af-remote logged their launch, invocations as the stand-in "
        "logged them):",
        "",
        *(f"- {text}" for _, text in sorted(events)),
    ]


def report_sequential(section: Section, runs: list[UpRun]) -> None:
    later = runs[1:]
    creation = [
        value
        for item in later
        if (value := item.step_time("creating the session", "sending the prompt"))
        is not None
    ]
    section.add(
        Figure(
            "each later agent: `sprite` calls",
            f"{sorted({item.count for item in later})}",
            "1",
            all(item.count == 1 for item in later),
        ),
        reason="a later agent costs more than one `sprite exec`.",
    )
    wall = median([item.run.wall for item in later])
    session = median(creation) if creation else float("nan")
    rest = median([item.bootstrap for item in later]) - session
    section.add(
        Figure(
            "each later agent: wall time",
            f"{wall:.2f} s = {LATENCY:g} latency + {session:.2f} session + "
            f"{rest:.2f} rest of bootstrap + "
            f"{median([item.standin_starts for item in later]):.2f} stand-in "
            f"start-up + {median([item.own for item in later]):.2f} af-remote "
            "(medians)",
            "-",
            None,
        )
    )
    section.details += table(
        ["agent", "wall s", "sprite calls", "bootstrap s", "session creation s"],
        [
            [
                str(n),
                f"{item.run.wall:.2f}",
                str(item.count),
                f"{item.bootstrap:.2f}",
                fmt(item.step_time("creating the session", "sending the prompt")),
            ]
            for n, item in enumerate(runs, start=1)
        ],
    )


def report_rerun(section: Section, reruns: list[UpRun]) -> None:
    sandbox = median([item.bootstrap for item in reruns])
    section.add(
        Figure(
            "re-run `up` (no prompt): sandbox time",
            f"{sandbox:.2f} s (median of {len(reruns)}, "
            f"{spread([item.bootstrap for item in reruns])})",
            "< 3 s",
            sandbox < 3.0,
        ),
        reason="the slowest steps are in the per-step table below; each `sprite-env` "
        "call and `node` JSON parse costs a process start in the sandbox.",
    )
    steps: dict[str, list[float]] = {}
    for item in reruns:
        lines = item.steps
        if not lines:
            continue
        marks = [
            (0.0, "(af-remote start, latency, upload, until step 1)"),
            *lines,
            (item.run.wall, ""),
        ]
        for (begun, line), (ended, _) in itertools.pairwise(marks):
            steps.setdefault(step_name(line), []).append(ended - begun)
    section.details += table(
        ["step (time to the next step line, the last to exit)", "median s"],
        [[name, f"{median(values):.2f}"] for name, values in steps.items()],
    )


def step_name(line: str) -> str:
    """A step's label without its number and the parts that differ per run."""
    words = line.split()
    if words and "/10" in words[0]:
        words = words[1:]
    kept = [w for w in words if not w.startswith(("/", "ses_", "spw_", "(branch"))]
    return " ".join(kept)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --- 4. attach -----------------------------------------------------------------------


def tui_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{harness.OPENCODE_PREFIX / 'bin'}{os.pathsep}{env['PATH']}"
    env.update(
        TERM="xterm-256color",
        LANG="C.UTF-8",
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_SHARE="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_CLAUDE_CODE="1",
        npm_config_registry=UNREACHABLE_NPM_REGISTRY,
    )
    return env


def time_to_first_frame(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    tmux = Tmux(f"af-bench-{uuid.uuid4().hex[:10]}")
    try:
        started = time.monotonic()
        tmux.start(argv, env=env, cwd=cwd)
        tmux.wait_for(ATTACH_MARKER, timeout=60)
        elapsed = time.monotonic() - started
        tmux.send_keys("C-c")
        tmux.wait_exit(timeout=20)
        return elapsed
    finally:
        tmux.kill()


def time_proxy_start(standin: Standin, server_port: int, password: str) -> float:
    import httpx

    local = free_port()
    started = time.monotonic()
    proxy = subprocess.Popen(
        ["sprite", "proxy", "-s", SANDBOX, f"{local}:{server_port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(auth=("opencode", password), timeout=2.0) as client:
            while True:
                try:
                    answer = client.get(f"http://127.0.0.1:{local}/global/health")
                    if answer.status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > 30:
                    raise BenchError("sprite proxy did not forward within 30 s")
                time.sleep(0.02)
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(timeout=10)


def measure_attach(
    section: Section,
    standin: Standin,
    project: Path,
    spawn: dict[str, Any],
    port: int,
) -> None:
    secret = e2e_support.password("sprites", SANDBOX)
    env = tui_environment()
    direct_env = {**env, "OPENCODE_SERVER_PASSWORD": secret}
    af_env = harness.af_environment(env)
    opencode = str(harness.OPENCODE_PREFIX / "bin" / "opencode")
    direct = [opencode, "attach", f"http://127.0.0.1:{port}", "--session"]
    direct.append(str(spawn["session_id"]))
    through_af = [sys.executable, "-m", "af_remote", "attach", str(spawn["spawn_id"])]
    times: dict[str, list[float]] = {"opencode attach": [], "af-remote attach": []}
    proxies = []
    for round_ in range(ATTACH_ROUNDS + 1):
        first = time_to_first_frame(direct, direct_env, project)
        second = time_to_first_frame(through_af, af_env, project)
        proxy = time_proxy_start(standin, port, secret)
        if round_ > 0:
            times["opencode attach"].append(first)
            times["af-remote attach"].append(second)
            proxies.append(proxy)
    direct_time = median(times["opencode attach"])
    af_time = median(times["af-remote attach"])
    proxy_time = median(proxies)
    limit = 1.3 * direct_time + proxy_time
    section.add(
        Figure(
            "`af-remote attach` to first frame",
            f"{af_time:.2f} s vs {direct_time:.2f} s direct + {proxy_time:.2f} s proxy "
            f"({af_time / direct_time:.2f}x)",
            f"<= 1.3x direct + proxy ({limit:.2f} s)",
            af_time <= limit,
        ),
        reason="af-remote's own start-up, the health wait through the proxy and the "
        "version check come before the TUI starts; see the details.",
    )
    section.details += table(
        ["what", "median s", "min-max s"],
        [[name, f"{median(v):.2f}", spread(v)] for name, v in times.items()]
        + [["sprite proxy start", f"{proxy_time:.2f}", spread(proxies)]],
    )


# --- 3a. fan-out ----------------------------------------------------------------


def bench_fanout(project_maker: Callable[..., Any]) -> Section:
    section = Section(
        f"Fan-out: {FANOUT_AGENTS} agents in {FANOUT_AGENTS} sprites at once",
        f"One `up --prompt --name` on a fresh sprite, then {FANOUT_AGENTS} of them at "
        f"once, each naming its own fresh sprite (and server port: the stand-in's "
        f"sprites share the host's network), with the {LATENCY:g} s latency. The "
        "figure is the wall time of the batch (first start to last exit) over the "
        "single run's. The stand-in runs every sandbox on this machine, so the CPU "
        "all sandboxes and processes used (the process trees of the sandboxes plus "
        "af-remote and its children) is measured too: divided by the cores, it is "
        "the least time the batch could take here.",
    )
    cores = len(os.sched_getaffinity(0))
    with (
        harness.isolated("fanout") as scratch,
        FakeLLM(reply=echo_last_user_message) as llm,
        harness.sprite_standin(scratch, latency=LATENCY) as standin,
    ):
        project = project_maker(
            scratch.root, "sprites", llm.base_url, data={"sandbox": SANDBOX}
        )

        def command(name: str) -> tuple[list[str], dict[str, str]]:
            args = ["up", "--json", "-v", "--prompt", f"fan-out {name}"]
            args += ["--name", name]
            return args, {"AF_REMOTE_SERVER_PORT": str(free_port())}

        children_before = harness.children_cpu_seconds()
        (solo,) = harness.run_parallel(project.root, [command("fan-solo")])
        solo_cpu = sandbox_cpu(standin, ["fan-solo"])
        children_mid = harness.children_cpu_seconds()
        solo_cpu += children_mid - children_before
        names = [f"fan-{n}" for n in range(1, FANOUT_AGENTS + 1)]
        batch = harness.run_parallel(project.root, [command(n) for n in names])
        batch_cpu = sandbox_cpu(standin, names)
        batch_cpu += harness.children_cpu_seconds() - children_mid
        for item in [solo, *batch]:
            item.check()
        ups = [
            UpRun(
                item,
                invocations_between(standin, item.started_at, item.ended_at, name),
            )
            for item, name in zip([solo, *batch], ["fan-solo", *names], strict=True)
        ]
        sessions = {json.loads(item.stdout)["session_id"] for item in batch}
    started = min(item.started_at for item in batch)
    ended = max(item.ended_at for item in batch)
    batch_wall = ended - started
    ratio = batch_wall / solo.wall
    floor = batch_cpu / cores
    section.add(
        Figure(
            f"{FANOUT_AGENTS} agents at once vs one",
            f"{ratio:.2f}x ({batch_wall:.1f} s vs {solo.wall:.1f} s)",
            "<= 1.5x",
            ratio <= 1.5,
        ),
        reason=f"this machine runs all {FANOUT_AGENTS} sandboxes itself: they used "
        f"{batch_cpu:.0f} CPU-seconds ({batch_cpu / max(solo_cpu, 1e-9):.1f}x the "
        f"single run's {solo_cpu:.1f}), which {cores} cores cannot finish in less "
        f"than {floor:.1f} s. On Sprites each sandbox has its own VM; here the batch "
        f"took {batch_wall / max(floor, solo.wall):.2f}x the larger of that floor "
        "and the single run. What would meet it is a sandbox per machine, as on "
        "Sprites, or a machine with the cores for 8 OpenCode servers starting at "
        "once; nothing in af-remote runs the spawns one after another (each run "
        "made its own 2 calls; its own share is in the table below).",
    )
    section.add(
        Figure(
            "fan-out vs its CPU floor on this machine",
            f"{batch_wall / max(floor, solo.wall):.2f}x "
            f"(floor {floor:.1f} s = {batch_cpu:.0f} CPU-s / {cores} cores)",
            "-",
            None,
        )
    )
    section.details.append(
        f"{len(sessions)} distinct sessions from {len(batch)} runs; every run's "
        "invocations: "
        + ", ".join(
            sorted({" ".join(i["subcommand"] for i in u.invocations) for u in ups})
        )
        + "."
    )
    section.details.append("")
    section.details += table(
        UP_COLUMNS,
        [
            up_row(name, item)
            for name, item in zip(["fan-solo", *names], ups, strict=True)
        ],
    )
    return section


def sandbox_cpu(standin: Standin, sprites: Sequence[str]) -> float:
    roots = [harness.supervisor_root_pid(standin, name) for name in sprites]
    return harness.tree_cpu_seconds([pid for pid in roots if pid is not None])


# --- the report -----------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary_table(sections: Sequence[Section]) -> list[str]:
    return table(
        ["benchmark", "measured", "target", "result"],
        [
            [f.name, f.measured, f.target, f.verdict]
            for section in sections
            for f in section.figures
        ],
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    manifest = (
        harness.OPENCODE_PREFIX
        / "lib"
        / "node_modules"
        / "opencode-ai"
        / "package.json"
    )
    try:
        opencode = str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        opencode = "unknown"
    commit = subprocess.run(
        ["git", "-C", str(CHECKOUT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "CPU": cpu,
        "cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}",
        "Python": f"{platform.python_version()} ({sys.executable})",
        "OpenCode": opencode,
        "OS": platform.platform(),
        "checkout": commit or "unknown",
    }


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def render_doc(sections: Sequence[Section], info: dict[str, str], took: float) -> str:
    lines = [
        "# Performance",
        "",
        "Generated by `bin/bench` (bench/run.py); do not edit by hand, run it again. "
        "Every figure compares things measured side by side in the same run, because "
        "the machines it runs on are shared; the absolute times are for context. "
        "See bench/README.md for what each benchmark does.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += ["", "## Results", "", *summary_table(sections), ""]
    misses = [miss for section in sections for miss in section.misses]
    if misses:
        lines += ["### Targets not met", ""]
        lines += [f"- {miss}" for miss in misses]
        lines.append("")
    for section in sections:
        lines += [f"## {section.title}", "", section.method, ""]
        if section.details:
            lines += [*section.details, ""]
    lines.append(f"The run took {took:.0f} s.")
    return "\n".join(lines) + "\n"


BENCHMARKS: dict[str, Callable[[], list[Section]]] = {
    "startup": lambda: [bench_startup()],
    "up": lambda: bench_up_and_attach(e2e_support.make_project),
    "fanout": lambda: [bench_fanout(e2e_support.make_project)],
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--output", type=Path, default=DOC, help="where to write the report"
    )
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    info = machine()
    info["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load()
    started = time.monotonic()
    sections: list[Section] = []
    try:
        for name in chosen:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            sections += BENCHMARKS[name]()
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    info["load average (1, 5, 15 min)"] = f"{load_before} before, {load()} after"
    print("\n".join(summary_table(sections)))
    if args.only is None or args.output != DOC:
        args.output.write_text(render_doc(sections, info, took), encoding="utf-8")
        print(f"bench: wrote {args.output}", file=sys.stderr)
    # Targets not met are findings to report, not a failure of the benchmark.
    return 0


if __name__ == "__main__":
    sys.exit(main())
