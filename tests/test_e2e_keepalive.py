"""The keep-alive on the sprite stand-in: a busy agent with nobody attached.

A sprite pauses a short while after its last activity, and an agent waiting on its
model is no activity. These tests shorten the stand-in's idle window, make the fake
model stream its reply for longer than that window, and watch from the host, which
does not count as activity (the stand-in shares the host's network), what happens
after `up` returns:
- with the keep-alive (the default) the sprite stays up, the reply is done on time,
  the hold is dropped within one poll once the session is idle, the sprite then
  pauses, and after a cold wake the keep-alive is back without holding for nothing;
- with it off the sprite freezes while the agent works, and the reply waits for a
  wake.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_support import Project, af_json, make_project, opencode_prefix, password
from fakellm import FakeLLM, echo_last_user_message
from opencode_support import free_port
from standin import fixture as standin_fixture
from standin._common import host_request
from standin.fixture import Standin

pytestmark = pytest.mark.e2e

sprite_standin = standin_fixture.sprite_standin

SANDBOX = "af-keepalive"
# The keep-alive notices a busy session at its first poll that the server answers;
# on a loaded machine that took up to ~5 s after `up` returned.
IDLE_SECONDS = 8
COLD_SECONDS = 1
CHUNKS = 10
CHUNK_DELAY = 1.0
STREAM_SECONDS = CHUNKS * CHUNK_DELAY
KEEPALIVE_INTERVAL = 1
KEEPALIVE_EXPIRE = 5
# When the reply is due after `up` returns: the stream plus room for OpenCode to
# start its request on a busy machine. A sprite left alone pauses long before.
DUE_SECONDS = STREAM_SECONDS + 12
# A poll is the interval's sleep plus its own requests (a few local round trips).
POLL_SECONDS = KEEPALIVE_INTERVAL + 1.0
PROMPT = "Take your time with this answer, please."
# The keep-alive service and the task it holds share a name.
SERVICE = TASK = "af-keepalive"
SERVICE_LOG = f"logs/services/{SERVICE}.log"
# "<time> [stderr] <keepalive.sh's own time> keepalive: <message>"
LOG_LINE = re.compile(r"^(\S+Z) \[std(?:out|err)\] (?:\S+ keepalive: )?(.*)$")


@pytest.fixture
def slow_llm() -> Iterator[FakeLLM]:
    with FakeLLM(
        reply=echo_last_user_message, chunk_delay=CHUNK_DELAY, chunks=CHUNKS
    ) as llm:
        yield llm


@dataclass
class Agent:
    """One spawn made by `up`, and how to watch it from the host without waking it."""

    project: Project
    standin: Standin
    spawn: dict[str, Any]
    base_url: str
    secret: str
    up_returned: float
    up_returned_epoch: float
    # (seconds after up returned, power, keep-alive task live) per look.
    samples: list[tuple[float, str, bool]] = field(default_factory=list)

    def since_up(self) -> float:
        return time.monotonic() - self.up_returned

    def task(self) -> dict[str, Any] | None:
        """The keep-alive task, asked of the supervisor from the host (no wake)."""
        status, body = host_request(self.standin.state(SANDBOX), "GET", "/v1/tasks")
        assert status == 200, body
        tasks = json.loads(body)["tasks"]
        return next((task for task in tasks if task["name"] == TASK), None)

    def look(self) -> None:
        power = self.standin.power(SANDBOX)
        self.samples.append((self.since_up(), power, self.task() is not None))

    def finished_reply(self) -> tuple[str, float] | None:
        """(text, completion epoch) once the session is idle with its reply done.

        A frozen server accepts the connection and never answers: short timeouts,
        and no answer counts as not done.
        """
        session_id, workdir = self.spawn["session_id"], self.spawn["workdir"]
        params = {"directory": workdir}
        try:
            with httpx.Client(
                base_url=self.base_url, auth=("opencode", self.secret), timeout=1.0
            ) as client:
                statuses = client.get("/session/status", params=params)
                messages = client.get(f"/session/{session_id}/message", params=params)
        except httpx.HTTPError:
            return None
        statuses.raise_for_status()
        messages.raise_for_status()
        if session_id in statuses.json():
            return None
        done = [
            message
            for message in messages.json()
            if message["info"]["role"] == "assistant"
            and message["info"].get("time", {}).get("completed")
        ]
        if not done:
            return None
        text = "".join(
            part.get("text", "")
            for part in done[-1]["parts"]
            if part.get("type") == "text"
        )
        return text, done[-1]["info"]["time"]["completed"] / 1000

    def watch_until_done(self, until: float) -> tuple[str, float] | None:
        """Look every ~0.2 s until the reply is done or `until` s after up."""
        while True:
            self.look()
            finished = self.finished_reply()
            if finished is not None or self.since_up() >= until:
                return finished
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = af_json(
            self.project.root, "status", self.spawn["spawn_id"]
        )
        return report


def sprites_project(
    tmp_path: Path, standin: Standin, llm: FakeLLM, env_lines: dict[str, str]
) -> tuple[Project, int]:
    standin.set_idle(IDLE_SECONDS)
    standin.seed_new_homes(opencode_prefix(), ".af-remote/opencode")
    port = free_port()
    project = make_project(
        tmp_path,
        "sprites",
        llm.base_url,
        data={"server_port": str(port), "sandbox": SANDBOX},
        env_lines={
            "AF_REMOTE_KEEPALIVE_INTERVAL": str(KEEPALIVE_INTERVAL),
            "AF_REMOTE_KEEPALIVE_EXPIRE": str(KEEPALIVE_EXPIRE),
            **env_lines,
        },
    )
    return project, port


def up(project: Project, port: int, standin: Standin, prompt: str) -> Agent:
    spawn = af_json(project.root, "up", "--prompt", prompt)
    return Agent(
        project=project,
        standin=standin,
        spawn=spawn,
        base_url=f"http://127.0.0.1:{port}",
        secret=password("sprites", SANDBOX),
        up_returned=time.monotonic(),
        up_returned_epoch=time.time(),
    )


@dataclass
class HeldRun:
    busy_status: dict[str, Any]
    done_after: float
    completed_at: float


def watch_held_reply(agent: Agent, prompt: str) -> HeldRun:
    """Watch a busy agent that only the keep-alive holds until its reply is done."""
    # Until the status exec below, only the keep-alive's task can keep the sprite
    # running past the idle window (the looks from the host do not).
    agent.watch_until_done(IDLE_SECONDS + 1.5)
    assert agent.samples[-1][0] > IDLE_SECONDS, agent.samples
    assert agent.task() is not None, agent.samples
    busy = agent.status()
    assert busy["session"]["state"] == "busy", busy
    assert busy["keepalive"]["enabled"] is True
    assert busy["keepalive"]["holding"] is True
    assert busy["keepalive"]["expires_at"]

    finished = agent.watch_until_done(DUE_SECONDS)
    assert finished is not None, f"no reply {DUE_SECONDS}s after up: {agent.samples}"
    text, completed_at = finished
    assert text == prompt
    assert all(power == "running" for _, power, _ in agent.samples), agent.samples
    # Idle: the task goes within one poll.
    assert agent.standin.wait_for(lambda: agent.task() is None, timeout=POLL_SECONDS)
    return HeldRun(busy, agent.since_up(), completed_at)


def keepalive_events(standin: Standin) -> list[tuple[float, str]]:
    """(epoch, message) of each line the keep-alive service logged."""
    log = standin.runtime(SANDBOX) / SERVICE_LOG
    events = []
    for line in log.read_text().splitlines():
        match = LOG_LINE.match(line)
        if match:
            stamp = datetime.fromisoformat(match[1].replace("Z", "+00:00"))
            events.append((stamp.timestamp(), match[2]))
    return events


def watching_lines(standin: Standin) -> list[float]:
    """When the keep-alive (re)started, from its log."""
    events = keepalive_events(standin)
    return [at for at, message in events if message.startswith("watching")]


def holds_of(events: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """(first PUT, DELETE) of each hold, from the keep-alive's log."""
    holds: list[tuple[float, float]] = []
    start: float | None = None
    for at, message in events:
        if message.startswith("watching"):
            assert start is None, f"restarted while holding: {events}"
        elif message.startswith("holding"):
            assert start is None, f"a second hold without a release: {events}"
            start = at
        elif message.startswith("all sessions idle"):
            assert start is not None, f"a release without a hold: {events}"
            holds.append((start, at))
            start = None
    assert start is None, f"a hold never released: {events}"
    return holds


def test_the_keepalive_holds_a_busy_sprite_awake_and_lets_it_go(
    tmp_path: Path, sprite_standin: Standin, slow_llm: FakeLLM
) -> None:
    sprite_standin.set_cold(COLD_SECONDS)
    project, port = sprites_project(tmp_path, sprite_standin, slow_llm, {})
    agent = up(project, port, sprite_standin, PROMPT)

    run = watch_held_reply(agent, PROMPT)
    idle = agent.status()
    assert idle["session"]["state"] == "idle", idle
    assert idle["keepalive"] == {"enabled": True, "holding": False, "expires_at": None}
    # Held for nothing no longer: the sprite pauses, then goes cold.
    assert sprite_standin.wait_for(
        lambda: sprite_standin.power(SANDBOX) == "cold",
        timeout=IDLE_SECONDS + COLD_SECONDS + 5,
    )

    # A cold wake (this exec) restarts the services: the keep-alive is back,
    # watching, and holds nothing while every session is idle.
    woken = agent.status()
    assert woken["keepalive"] == {
        "enabled": True,
        "holding": False,
        "expires_at": None,
    }
    assert sprite_standin.wait_for(
        lambda: len(watching_lines(sprite_standin)) == 2, timeout=5
    ), keepalive_events(sprite_standin)
    assert agent.task() is None

    # New settings reach the running keep-alive with the next `up`.
    again = af_json(project.root, "up", env={"AF_REMOTE_KEEPALIVE_INTERVAL": "2"})
    assert again["spawn_id"] == agent.spawn["spawn_id"]
    services = json.loads(
        (sprite_standin.sprite_dir(SANDBOX) / "services.json").read_text()
    )
    assert services[SERVICE]["args"] == [str(port), "2", str(KEEPALIVE_EXPIRE)]
    assert sprite_standin.wait_for(
        lambda: len(watching_lines(sprite_standin)) == 3, timeout=5
    ), keepalive_events(sprite_standin)
    assert keepalive_events(sprite_standin)[-1][1].endswith("every 2s")

    events = keepalive_events(sprite_standin)
    ((held_at, released_at),) = holds_of(events)
    held_after = held_at - agent.up_returned_epoch
    release_delay = released_at - run.completed_at
    # The hold began within the idle window after up returned, and ended within
    # one poll of the session going idle.
    assert held_after < IDLE_SECONDS, events
    assert 0 <= release_delay <= POLL_SECONDS, events
    print(
        f"\nkeep-alive on (idle window {IDLE_SECONDS}s, reply streamed over "
        f"{STREAM_SECONDS:.0f}s, poll {KEEPALIVE_INTERVAL}s, expiry "
        f"{KEEPALIVE_EXPIRE}s): reply done {run.done_after:.1f}s after up returned, "
        f"sprite never paused ({len(agent.samples)} looks); hold taken "
        f"{held_after:.1f}s after up returned, lived {released_at - held_at:.1f}s "
        f"(first PUT to DELETE), released {release_delay:.2f}s after the reply was "
        f"done; status busy: {run.busy_status['keepalive']}; idle: "
        f"{idle['keepalive']}; after a cold wake: {woken['keepalive']}"
    )


def test_without_the_keepalive_a_busy_sprite_freezes_until_woken(
    tmp_path: Path, sprite_standin: Standin, slow_llm: FakeLLM
) -> None:
    project, port = sprites_project(
        tmp_path, sprite_standin, slow_llm, {"AF_REMOTE_KEEPALIVE": "off"}
    )
    agent = up(project, port, sprite_standin, PROMPT)

    finished = agent.watch_until_done(DUE_SECONDS)
    assert finished is None, f"the reply finished unheld: {finished}"
    assert sprite_standin.is_paused(SANDBOX)
    powers = [power for _, power, _ in agent.samples]
    paused = powers.index("warm")
    paused_after = agent.samples[paused][0]
    # Once frozen it stayed frozen: looking from the host wakes nothing.
    assert set(powers[paused:]) == {"warm"}, agent.samples
    model_requests = len(slow_llm.chat_requests())
    assert not any(held for _, _, held in agent.samples), agent.samples
    assert not (sprite_standin.runtime(SANDBOX) / SERVICE_LOG).exists()

    # Something wakes it (here an exec that stays), and the agent carries on.
    woken_after = agent.since_up()
    wake = subprocess.Popen(
        ["sprite", "exec", "-s", SANDBOX, "--", "sleep", "120"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The agent may have been frozen before its model request: room for it.
        finished = agent.watch_until_done(woken_after + DUE_SECONDS + 10)
    finally:
        wake.send_signal(signal.SIGINT)
        wake.wait(timeout=10)
    assert finished is not None, f"no reply after the wake: {agent.samples}"
    text, _ = finished
    done_after = agent.since_up()
    assert text == PROMPT

    report = agent.status()
    assert report["keepalive"] == {
        "enabled": False,
        "holding": False,
        "expires_at": None,
    }
    print(
        f"\nkeep-alive off: paused {paused_after:.1f}s after up returned; reply not "
        f"done {woken_after:.1f}s after up (due by {DUE_SECONDS:.0f}s; model "
        f"requests by then: {model_requests}); woken by an "
        f"exec then, reply done {done_after:.1f}s after up; status: "
        f"{report['keepalive']}"
    )
