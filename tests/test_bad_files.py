"""Files af-remote cannot use: a registry that does not parse or has a newer schema,
a render with a missing or malformed file. Each is refused with one line that names
the file, before any provider call, and is left byte for byte as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import reliability_support
from af_remote import paths
from af_remote.records import Registry
from conftest import RunCli
from reliability_support import TALLY

tally = reliability_support.tally  # prints the counts after the session
pytestmark = pytest.mark.usefixtures("tally")

SANDBOX = "af-my-project"

UNUSABLE = [
    pytest.param(b'{"schema_version": 1, "records": [', id="truncated"),
    pytest.param(b"\xff\xfe not utf-8", id="not-utf8"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"schema_version": 2, "records": []}', id="newer-schema"),
    pytest.param(
        b'{"schema_version": 99, "records": [{"future": true}], "x": 1}',
        id="much-newer-schema",
    ),
]

COMMANDS = [
    pytest.param(["ls"], id="ls"),
    pytest.param(["ls", "--all", "--json"], id="ls-json"),
    pytest.param(["up", "--prompt", "x"], id="up"),
    pytest.param(["up", "--dry-run", "--prompt", "x"], id="up-dry-run"),
    pytest.param(["status"], id="status"),
    pytest.param(["status", "spw_0"], id="status-id"),
    pytest.param(["down"], id="down"),
    pytest.param(["down", "--destroy"], id="down-destroy"),
    pytest.param(["attach"], id="attach"),
]


@pytest.fixture
def sprite_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `sprite` on PATH that only notes that it was called."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "sprite-calls.log"
    program = bin_dir / "sprite"
    program.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 1\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def running_spawn(project: Path) -> dict[str, object]:
    registry = Registry()
    spawn = registry.create_spawn(
        provider="sprites",
        sandbox=SANDBOX,
        af_remote={"org": None, "project": str(project), "workdir": "/w"},
    )
    return registry.update_spawn(
        str(spawn["spawn_id"]), state="running", session_id="ses_1"
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {
        path.name: path.read_bytes()
        for path in directory.iterdir()
        if not path.name.endswith(".lock")
    }


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("af-remote: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("content", UNUSABLE)
@pytest.mark.parametrize("argv", COMMANDS)
def test_an_unusable_spawns_file_stops_every_command(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    sprite_calls: Path,
    argv: list[str],
    content: bytes,
) -> None:
    directory = paths.registry_dir()
    directory.mkdir(parents=True)
    spawns = directory / "remote_spawns.json"
    spawns.write_bytes(content)
    TALLY["bad files refused"] += 1

    result = run_cli(*argv, cwd=scratch_repo)

    assert result.exit_code == 1, result.stderr
    assert str(spawns) in one_error_line(result.stderr)
    assert spawns.read_bytes() == content
    assert snapshot(directory) == {"remote_spawns.json": content}
    assert not sprite_calls.exists()
    assert not (paths.af_remote_config_dir() / "passwords").exists()


SESSIONS_WRITERS = [
    pytest.param(["up", "--prompt", "x"], id="up"),
    pytest.param(["up", "--prompt", "x", "--request-id", "r1"], id="up-request-id"),
    pytest.param(["down"], id="down"),
    pytest.param(["down", "--destroy"], id="down-destroy"),
]


@pytest.mark.parametrize("content", UNUSABLE)
@pytest.mark.parametrize("argv", SESSIONS_WRITERS)
def test_an_unusable_sessions_file_stops_its_writers_before_the_provider(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    sprite_calls: Path,
    argv: list[str],
    content: bytes,
) -> None:
    """up and down end by writing sessions.json: finding it unusable only then would
    leave a sandbox changed and the two files disagreeing."""
    running_spawn(scratch_repo)
    directory = paths.registry_dir()
    sessions = directory / "sessions.json"
    sessions.write_bytes(content)
    before = snapshot(directory)
    TALLY["bad files refused"] += 1

    result = run_cli(*argv, cwd=scratch_repo)

    assert result.exit_code == 1, result.stderr
    assert str(sessions) in one_error_line(result.stderr)
    assert snapshot(directory) == before
    assert not sprite_calls.exists()


def test_readers_do_not_need_the_sessions_file(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    """ls reads the spawns only: a broken sessions.json is no reason to refuse it."""
    spawn = running_spawn(scratch_repo)
    sessions = paths.registry_dir() / "sessions.json"
    sessions.write_bytes(b"{oops")

    result = run_cli("ls", "--json", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    assert [s["spawn_id"] for s in json.loads(result.stdout)["spawns"]] == [
        spawn["spawn_id"]
    ]
    assert sessions.read_bytes() == b"{oops"


def _missing(path: Path) -> None:
    path.unlink()


def _unquoted(path: Path) -> None:
    path.write_text(path.read_text() + "AF_REMOTE_MODEL='unterminated\n")


def _garbage(path: Path) -> None:
    path.write_text(path.read_text() + "this is not a setting\n")


def _not_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"AF_REMOTE_ORG='\xff'\n")


def _not_json(path: Path) -> None:
    path.write_text('{"model": ')


def _json_list(path: Path) -> None:
    path.write_text("[]")


def _server_garbage(path: Path) -> None:
    path.write_text("OPENCODE_DISABLE_AUTOUPDATE=1\n$(touch /tmp/x) = 2\n")


def _server_bad_name(path: Path) -> None:
    path.write_text("'BAD-NAME'=1\n")


def _secrets_unquoted(path: Path) -> None:
    path.write_text("ANTHROPIC_API_KEY='sk-never-shown\n")


RENDER_BREAKS = [
    pytest.param(".env", _missing, "is missing", id="env-missing"),
    pytest.param(".env", _unquoted, "does not parse", id="env-unterminated-quote"),
    pytest.param(".env", _garbage, "does not parse", id="env-garbage-line"),
    pytest.param(".env", _not_utf8, "cannot read", id="env-not-utf8"),
    pytest.param("opencode.json", _not_json, "not valid JSON", id="opencode-json"),
    pytest.param("opencode.json", _json_list, "JSON object", id="opencode-json-list"),
    pytest.param("server.env", _server_garbage, "does not parse", id="server-env"),
    pytest.param("server.env", _server_bad_name, "server.env", id="server-env-name"),
    pytest.param("secrets.env", _secrets_unquoted, "does not parse", id="secrets-env"),
    pytest.param("bootstrap.sh", _missing, "is missing", id="bootstrap-missing"),
    pytest.param("serve.sh", _missing, "is missing", id="serve-missing"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["up", "up-dry-run"])
@pytest.mark.parametrize(("name", "damage", "problem"), RENDER_BREAKS)
def test_a_broken_render_is_refused_before_any_record_or_provider_call(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    sprite_calls: Path,
    name: str,
    damage: Callable[[Path], None],
    problem: str,
    dry_run: bool,
) -> None:
    target = sprites_render / name
    if not target.exists():
        target.write_text("")
    damage(target)
    before = target.read_bytes() if target.exists() else None
    TALLY["bad files refused"] += 1

    flags = ["--dry-run"] if dry_run else []
    result = run_cli("up", *flags, "--prompt", "x", cwd=scratch_repo)

    assert result.exit_code == 1, result.stderr
    line = one_error_line(result.stderr)
    assert str(target) in line and problem in line
    assert "sk-never-shown" not in result.stderr
    assert (target.read_bytes() if target.exists() else None) == before
    assert not sprite_calls.exists()
    assert snapshot(paths.registry_dir()) == {}
    assert not (paths.af_remote_config_dir() / "passwords").exists()


@pytest.mark.parametrize(("name", "damage", "problem"), RENDER_BREAKS[:4])
def test_a_broken_env_file_does_not_stop_ls(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    name: str,
    damage: Callable[[Path], None],
    problem: str,
) -> None:
    """ls acts on the records alone: the render's .env is not its to read, and it
    leaves the file as it is."""
    spawn = running_spawn(scratch_repo)
    target = sprites_render / name
    damage(target)
    before = target.read_bytes() if target.exists() else None

    listed = run_cli("ls", "--json", cwd=scratch_repo)

    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)["spawns"][0]["spawn_id"] == spawn["spawn_id"]
    assert (target.read_bytes() if target.exists() else None) == before
