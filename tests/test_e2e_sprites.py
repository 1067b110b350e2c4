"""End to end on the sprite stand-in: real rendered scripts run by bash in the
sandbox, real OpenCode as a sprite service, the fake model answering.

The sprites share the host's network in the stand-in, so the tests reach each
sprite's OpenCode server on 127.0.0.1 at its (test-chosen) port.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from af_remote import config
from e2e_support import (
    FAKE_API_KEY,
    Project,
    af,
    af_json,
    assert_no_secret,
    files_under,
    make_project,
    opencode_prefix,
    password,
    registry,
    reply_text,
    spawn_record,
)
from fakellm import FakeLLM
from opencode_support import free_port
from standin import fixture as standin_fixture
from standin.fixture import Standin

pytestmark = pytest.mark.e2e

sprite_standin = standin_fixture.sprite_standin

HOSTILE_PROMPT = (
    'Fix it: it\'s "broken" $(touch /tmp/af-remote-pwned) `id` ; rm -rf / \\\n'
    "second line\ttab 'single' ${HOME} \u00e9\u6f22\u5b57 \U0001f680\n"
    "-s evil -o org --file /etc/passwd:/x\n"
)


@pytest.fixture
def sprites_project(
    tmp_path: Path, sprite_standin: Standin, llm: FakeLLM
) -> tuple[Project, Standin, int]:
    sprite_standin.seed_new_homes(opencode_prefix(), ".af-remote/opencode")
    port = free_port()
    project = make_project(
        tmp_path,
        "sprites",
        llm.base_url,
        data={"server_port": str(port), "sandbox": "af-e2e"},
        env_lines={"AF_REMOTE_KEEPALIVE_INTERVAL": "1"},
    )
    return project, sprite_standin, port


def _sprite_calls(standin: Standin) -> list[list[str]]:
    return [record["argv"] for record in standin.invocations()]


def test_up_runs_an_agent_and_records_it(
    sprites_project: tuple[Project, Standin, int], llm: FakeLLM
) -> None:
    project, standin, port = sprites_project

    first = af_json(project.root, "up", "--prompt", "Say hello")

    # At most two sprite invocations before the session id: create, then exec.
    assert [argv[1] for argv in _sprite_calls(standin)] == ["create", "exec"]
    assert first["state"] == "running" and first["session_id"].startswith("ses_")
    assert first["provider_calls"] == 2
    assert first["branch"] == f"af/{first['spawn_id']}"
    base_url = f"http://127.0.0.1:{port}"
    secret = password("sprites", "af-e2e")
    reply = reply_text(base_url, secret, first["session_id"], first["workdir"])
    assert reply == "Say hello"

    listed = af_json(project.root, "ls")["spawns"]
    assert [(s["spawn_id"], s["state"], s["session_id"]) for s in listed] == [
        (first["spawn_id"], "running", first["session_id"])
    ]
    spawns = registry("remote_spawns.json")
    sessions = registry("sessions.json")
    assert spawns["schema_version"] == 1 and sessions["schema_version"] == 1
    record = spawn_record(first["spawn_id"])
    assert record["provider"] == "sprites"
    assert record["provider_sandbox_id"] == "af-e2e"
    assert record["state"] == "running"
    assert record["session_id"] == first["session_id"]
    for key in ("request_id", "provider_operation_id", "server_ref", "last_error"):
        assert key in record
    (session,) = sessions["records"]
    assert session["session_id"] == first["session_id"]
    assert session["origin_type"] == "spawn"
    assert session["work_ref"] == first["spawn_id"]
    assert session["status"] == "active"
    assert session["directory"] == first["workdir"]
    assert session["project"] == str(project.root)

    # Again without a prompt: one exec, nothing created, the same spawn.
    again = af_json(project.root, "up")
    assert again["spawn_id"] == first["spawn_id"] and again["changed"] is False
    assert [argv[1] for argv in _sprite_calls(standin)] == ["create", "exec", "exec"]

    # A second agent: one sprite call, its own worktree and session.
    second = af_json(project.root, "up", "--prompt", "Second agent")
    assert [argv[1] for argv in _sprite_calls(standin)][3:] == ["exec"]
    assert second["spawn_id"] != first["spawn_id"]
    assert second["session_id"] != first["session_id"]
    assert second["workdir"] != first["workdir"]
    assert reply_text(base_url, secret, second["session_id"], second["workdir"]) == (
        "Second agent"
    )
    home = standin.home("af-e2e")
    for spawn in (first, second):
        worktree = home / Path(spawn["workdir"]).relative_to("/home/sprite")
        assert (worktree / "README.md").read_text().startswith("# A project")
        # The worktree's .git names paths inside the sprite: ask git there.
        head = standin.exec(
            "af-e2e", "git", "-C", spawn["workdir"], "branch", "--show-current"
        )
        assert head.stdout.strip().splitlines()[-1] == f"af/{spawn['spawn_id']}"

    status = af_json(project.root, "status", second["spawn_id"])
    assert status["server"]["healthy"] is True
    assert status["server"]["version"] == "1.18.33"
    assert status["session"]["state"] == "idle"
    assert status["keepalive"]["enabled"] is True

    down = af(project.root, "down", "--destroy")
    assert down.returncode == 0, down.stderr
    assert not standin.sprite_dir("af-e2e").exists()
    assert {s["state"] for s in registry("remote_spawns.json")["records"]} == {
        "terminated"
    }
    gone = af(project.root, "down", "--destroy", first["spawn_id"])
    assert gone.returncode == 0 and "already gone" in gone.stdout


def test_a_hostile_prompt_arrives_byte_for_byte(
    sprites_project: tuple[Project, Standin, int], llm: FakeLLM
) -> None:
    project, standin, port = sprites_project
    sentinel = Path("/tmp/af-remote-pwned")
    sentinel.unlink(missing_ok=True)
    prompt_file = project.root.parent / "prompt.txt"
    prompt_file.write_bytes(HOSTILE_PROMPT.encode())

    spawn = af_json(project.root, "up", "--prompt-file", str(prompt_file), "-v")

    llm.wait_for_chat(1, timeout=60)
    received = [
        message
        for request in llm.chat_requests()
        for message in request.body["messages"]
        if message["role"] == "user"
    ]
    texts = [
        m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
        for m in received
    ]
    assert HOSTILE_PROMPT in texts
    assert not sentinel.exists()
    secret = password("sprites", "af-e2e")
    reply = reply_text(
        f"http://127.0.0.1:{port}", secret, spawn["session_id"], spawn["workdir"]
    )
    assert reply == HOSTILE_PROMPT
    # The flags inside the prompt did not reach the sprite CLI as flags.
    exec_argv = _sprite_calls(standin)[-1]
    assert "/etc/passwd:/x" not in exec_argv


def test_no_secret_reaches_argv_output_records_or_project(
    sprites_project: tuple[Project, Standin, int], llm: FakeLLM
) -> None:
    project, standin, _ = sprites_project
    outputs: list[str] = []

    def run(*args: str) -> None:
        result = af(project.root, *args)
        assert result.returncode == 0, (args, result.stderr)
        outputs.extend([result.stdout, result.stderr])

    run("up", "--prompt", "secret check", "-v")
    server_password = password("sprites", "af-e2e")
    # From a machine without the password file, up fetches the server's password
    # rather than replace it (which would lock af-remote out of the server).
    config.password_path("sprites", None, "af-e2e").unlink()
    run("up", "-v")
    assert password("sprites", "af-e2e") == server_password
    for args in (("status", "-v"), ("ls", "--all", "-v"), ("down", "-v")):
        run(*args)
    in_sprite = (standin.home("af-e2e") / ".af-remote" / "secrets.env").read_text()
    assert FAKE_API_KEY in in_sprite and server_password in in_sprite
    run("down", "--destroy", "-v")

    secrets = [FAKE_API_KEY, server_password]
    argv_text = json.dumps(standin.invocations())
    records = json.dumps(registry("remote_spawns.json")) + json.dumps(
        registry("sessions.json")
    )
    project_text = "".join(
        path.read_text(errors="replace") for path in files_under(project.root)
    )
    assert_no_secret(secrets, argv_text, where="into sprite argv")
    assert_no_secret(secrets, *outputs, where="into af-remote output")
    assert_no_secret(secrets, records, where="into the records")
    assert_no_secret(secrets, project_text, where="into the project")


def test_url_access_stays_sprite_unless_set_and_is_set_once(
    sprites_project: tuple[Project, Standin, int],
) -> None:
    project, standin, _ = sprites_project

    af_json(project.root, "up")
    assert "URL Auth: sprite" in standin.run("info", "-s", "af-e2e").stdout
    assert [argv[1] for argv in _sprite_calls(standin)] == ["create", "exec", "info"]

    public = {"AF_REMOTE_URL_AUTH": "public"}
    af_json(project.root, "up", "--prompt", "now public", env=public)
    assert "URL Auth: public" in standin.run("info", "-s", "af-e2e").stdout
    af_json(project.root, "up", "--prompt", "still public", env=public)
    calls = [argv[1:3] for argv in _sprite_calls(standin)]
    assert calls.count(["config", "update"]) == 1
