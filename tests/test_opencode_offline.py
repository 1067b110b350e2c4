"""The real OpenCode server and TUI, driven offline against the fake model server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fakellm import (
    FakeLLM,
    echo_last_user_message,
    fake_llm,  # noqa: F401  (a fixture, used by name)
    split_reply,
    user_messages,
)
from opencode_support import (
    TUI_QUIT_KEY,
    OpenCodeClient,
    OpenCodeServer,
    Tmux,
    fake_provider_config,
    offline_env,
    opencode_bin,
)

FAKELLM_SCRIPT = Path(__file__).with_name("fakellm.py")
AWKWARD_PROMPT = (
    "fix \"the\" 'login' test: $(rm -rf /) `uname -a` $HOME \\n;|&>\n"
    "second line\ttab\r\nünïcödé ☃ 🚀 中文 \u200b end\\"
)


@dataclass
class Served:
    server: OpenCodeServer
    llm: FakeLLM
    project: Path


def make_git_project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text("scratch project\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return path


@pytest.fixture(scope="module")
def opencode() -> Path:
    binary = opencode_bin()
    if binary is None:
        pytest.skip(
            "OpenCode is not installed: set AF_REMOTE_TEST_OPENCODE or run "
            "npm install --prefix ~/.cache/af-remote-test/opencode opencode-ai@1.18.33"
        )
    return binary


@pytest.fixture(scope="module")
def served(
    opencode: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("opencode")
    project = make_git_project(root / "project")
    with FakeLLM(reply=echo_last_user_message) as llm:
        config = fake_provider_config(llm.base_url)
        with OpenCodeServer(opencode, root / "home", project, config) as server:
            print(f"opencode serve healthy after {server.startup_seconds:.2f}s")
            yield Served(server, llm, project)


@pytest.fixture
def client(served: Served) -> Iterator[OpenCodeClient]:
    served.llm.chunk_delay = 0.0
    with served.server.client() as client:
        yield client


# The fake model on its own: fast, needs no OpenCode.


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 100])
def test_split_reply_joins_back_exactly(chunks: int) -> None:
    text = "héllo ☃ wörld 🚀"
    pieces = split_reply(text, chunks)
    assert "".join(pieces) == text
    assert len(pieces) == min(chunks, len(text))


def test_fake_llm_streams_and_records(fake_llm: FakeLLM) -> None:  # noqa: F811
    body = {
        "model": "fake-model",
        "stream": True,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": AWKWARD_PROMPT}]},
        ],
    }
    raw = json.dumps(body, ensure_ascii=False).encode()
    with httpx.stream(
        "POST", f"{fake_llm.base_url}/chat/completions", content=raw
    ) as response:
        events = [
            line[6:] for line in response.iter_lines() if line.startswith("data: ")
        ]

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
    )
    assert text == AWKWARD_PROMPT
    assert any(
        c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks
    )
    assert fake_llm.chat_requests()[0].raw == raw


def test_fake_llm_answers_without_streaming_and_lists_models() -> None:
    with FakeLLM(reply="plain answer") as llm:
        models = httpx.get(f"{llm.base_url}/models").json()
        completion = httpx.post(
            f"{llm.base_url}/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "q"}],
            },
        ).json()

    assert [m["id"] for m in models["data"]] == ["fake-model"]
    assert completion["choices"][0]["message"]["content"] == "plain answer"


def test_fake_llm_answers_title_requests_with_its_title() -> None:
    body = {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You are a title generator. Output a title."},
            {"role": "user", "content": "hello"},
        ],
    }
    with FakeLLM(reply=echo_last_user_message, title="A title") as llm:
        answer = httpx.post(f"{llm.base_url}/chat/completions", json=body).json()
        assert llm.chat_requests() == []
        assert len(llm.chat_requests(include_titles=True)) == 1

    assert answer["choices"][0]["message"]["content"] == "A title"


def test_fake_llm_process_streams_slowly_and_records(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    argv = [sys.executable, str(FAKELLM_SCRIPT), "--port", "0", "--reply", "slow one"]
    argv += ["--chunk-delay", "0.2", "--chunks", "4", "--record", str(record)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        body = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "q"}],
        }
        started = time.monotonic()
        with httpx.stream(
            "POST", f"{base_url}/chat/completions", json=body
        ) as response:
            raw = response.read().decode()
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    assert 0.8 <= elapsed < 5
    assert raw.rstrip().endswith("data: [DONE]")
    logged = [json.loads(line) for line in record.read_text().splitlines()]
    assert [json.loads(entry["body"]) for entry in logged] == [body]
    assert process.returncode == 0


# The real OpenCode server.


@pytest.mark.e2e
def test_health_requires_the_password(served: Served) -> None:
    with OpenCodeClient(served.server.url, None) as anonymous:
        assert anonymous.health().status_code == 401
    with OpenCodeClient(served.server.url, "wrong-password") as wrong:
        assert wrong.health().status_code == 401
    with served.server.client() as client:
        response = client.health()

    assert response.status_code == 200
    assert response.json() == {"healthy": True, "version": "1.18.33"}


@pytest.mark.e2e
def test_password_is_not_on_the_command_line(served: Served) -> None:
    assert served.server.pid is not None
    cmdline = Path(f"/proc/{served.server.pid}/cmdline").read_bytes()
    assert served.server.password.encode() not in cmdline


@pytest.mark.e2e
def test_prompt_runs_busy_then_idle_and_reply_reads_back(
    served: Served, client: OpenCodeClient
) -> None:
    # A slow reply keeps the session busy long enough to be seen busy.
    served.llm.chunk_delay = 0.3
    session_id = client.create_session(served.project, title="Busy then idle")
    response = client.prompt_async(session_id, served.project, "reply-marker-7781")
    assert response.status_code == 204

    client.wait_busy(session_id, timeout=30)
    client.wait_idle(session_id, timeout=60)

    assert client.status() == {}
    assert client.reply_text(session_id) == "reply-marker-7781"
    assert client.session(session_id)["title"] == "Busy then idle"
    assert client.session(session_id)["directory"] == str(served.project)


@pytest.mark.e2e
def test_awkward_prompt_reaches_the_model_byte_for_byte(
    served: Served, client: OpenCodeClient
) -> None:
    session_id = client.create_session(served.project, title="Awkward prompt")
    before = len(served.llm.chat_requests())

    assert (
        client.prompt_async(session_id, served.project, AWKWARD_PROMPT).status_code
        == 204
    )
    client.wait_idle(session_id, timeout=60)

    received = served.llm.chat_requests()[before:]
    assert [user_messages(r.body)[-1] for r in received] == [AWKWARD_PROMPT]
    assert client.reply_text(session_id) == AWKWARD_PROMPT


@pytest.mark.e2e
def test_untitled_session_gets_its_title_from_the_model(
    served: Served, client: OpenCodeClient
) -> None:
    session_id = client.create_session(served.project)
    client.prompt_async(session_id, served.project, "name me")
    client.wait_idle(session_id, timeout=60)

    deadline = time.monotonic() + 10
    while client.session(session_id)["title"] != served.llm.title:
        assert time.monotonic() < deadline, client.session(session_id)["title"]
        time.sleep(0.1)
    assert client.reply_text(session_id) == "name me"


@pytest.mark.e2e
def test_prompting_leaves_the_worktree_clean(
    served: Served, client: OpenCodeClient
) -> None:
    session_id = client.create_session(served.project, title="Clean tree")
    client.prompt_async(session_id, served.project, "touch nothing")
    client.wait_idle(session_id, timeout=60)

    status = subprocess.run(
        ["git", "-C", str(served.project), "status", "--porcelain", "--ignored"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""


# The real TUI in a real terminal.


@pytest.mark.e2e
def test_attach_shows_the_session_and_quits_on_ctrl_c(
    served: Served, client: OpenCodeClient, tmp_path: Path
) -> None:
    session_id = client.create_session(served.project, title="Attach title 4417")
    client.prompt_async(session_id, served.project, "attach-reply-9923")
    client.wait_idle(session_id, timeout=60)

    tmux = Tmux(f"af-remote-test-{uuid.uuid4().hex[:12]}")
    env = offline_env(tmp_path / "tui-home")
    env["OPENCODE_SERVER_PASSWORD"] = served.server.password
    try:
        argv = [str(served.server.binary), "attach", served.server.url]
        tmux.start([*argv, "--session", session_id], env=env, cwd=served.project)
        first_frame = tmux.wait_for(
            "Attach title 4417", "attach-reply-9923", timeout=60
        )
        print(f"attach showed the reply after {first_frame:.2f}s")

        tmux.send_keys(TUI_QUIT_KEY)
        assert tmux.wait_exit(timeout=10) == 0
        assert f"opencode -s {session_id}" in tmux.capture()
    finally:
        tmux.kill()

    assert client.health().status_code == 200
