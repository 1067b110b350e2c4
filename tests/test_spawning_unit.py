"""What `up` prepares before it touches a sandbox: the env files a shell sources, the
prompt, the title, and `--dry-run`. The sprite CLI is never run here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

# plumbum binds subprocess.Popen (and asks `uname -p`) when first imported: that must
# happen before any test fakes processes, or it would keep the fake for good.
from plumbum import local
from pytest_subprocess import FakeProcess

from af_remote import config, paths, project, spawning
from af_remote.errors import UsageError
from af_remote.records import Registry
from af_remote.spawning import Request
from conftest import SPAWN_KEYS, RunCli

SANDBOX = "af-my-project"
DRY = "spw_DRYRUN"
SCRIPTS = ["bootstrap.sh", "serve.sh", "keepalive.sh", "status.sh"]
GENERATED = ["opencode.json", "spawn.env", "secrets.env", "server.env", "session.json"]

pytestmark = pytest.mark.usefixtures("no_model_keys")


def hostile(sentinel: Path) -> list[str]:
    """Values that a shell would act on if it interpreted them."""
    touch = f"touch {sentinel}"
    return [
        f"$({touch})",
        f"`{touch}`",
        f"x; {touch}",
        f"x' ; {touch}; echo '",
        f'x" ; {touch}; echo "',
        "line one\nline two\n",
        "  leading and trailing spaces  ",
        "ünïcødé 🚀 \u202eevil\u2028sep",
        "${HOME} $HOME \\ \\n * ? ~ ! # % & | < > { } [ ] = ,",
        "-e",
        "",
        "\r\n\t",
        "'",
        '"',
    ]


@pytest.fixture
def settings(sprites_render: Path, scratch_repo: Path) -> config.Settings:
    return config.load(scratch_repo, "sprites", environ={})


@pytest.fixture
def no_sprite(fp: FakeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every process is faked and refused except git; a `sprite` on PATH exists, so
    that a call to it fails as an unregistered process rather than a missing one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "sprite"
    program.write_text("#!/bin/sh\nexit 99\n")
    program.chmod(0o755)
    monkeypatch.setitem(local.env, "PATH", f"{bin_dir}:{local.env['PATH']}")
    for git in {"git", str(local.which("git")), shutil.which("git") or "git"}:
        fp.pass_command([git, fp.any()], occurrences=100)
    return str(program)


def sourced(env_file: Path, cwd: Path) -> dict[str, str]:
    """The variables a real bash has after `set -a; source FILE`."""
    output = subprocess.run(
        ["bash", "-c", 'set -a; source "$1"; env -0', "bash", str(env_file)],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    ).stdout
    pairs = (entry.split(b"=", 1) for entry in output.split(b"\0") if entry)
    return {key.decode(): value.decode("utf-8") for key, value in pairs}


# --- files a shell sources -------------------------------------------------------


def test_spawn_env_gives_bash_every_value_byte_for_byte(
    settings: config.Settings, tmp_path: Path
) -> None:
    sentinel = tmp_path / "sentinel"
    values = hostile(sentinel)
    for index in range(0, len(values), 5):
        chosen = values[index : index + 5] + ["v"] * 5
        risky = dataclasses.replace(
            settings,
            opencode_version=chosen[0],
            opencode_prefix=chosen[1],
            source_url=chosen[2],
            url_auth=chosen[3],
            source=chosen[4],
        )
        spawn = {"spawn_id": f"spw_{chosen[0]}"}
        env_file = tmp_path / "spawn.env"
        env_file.write_text(spawning.spawn_env(risky, spawn, chosen[1] + "ref"))

        seen = sourced(env_file, tmp_path)

        assert {key: seen[key] for key in seen if key.startswith("AF_")} == {
            "AF_SPAWN_ID": f"spw_{chosen[0]}",
            "AF_ROOT": "/home/sprite/.af-remote",
            "AF_OPENCODE_VERSION": chosen[0],
            "AF_OPENCODE_PREFIX": chosen[1],
            "AF_SERVER_PORT": "8080",
            "AF_SOURCE": chosen[4],
            "AF_SOURCE_URL": chosen[2],
            "AF_SOURCE_REF": chosen[1] + "ref",
            "AF_KEEPALIVE": "on",
            "AF_KEEPALIVE_INTERVAL": "10",
            "AF_KEEPALIVE_EXPIRE": "60",
            "AF_URL_AUTH": chosen[3],
        }
    assert not sentinel.exists()


def test_secrets_env_gives_bash_every_secret_byte_for_byte(
    settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinel = tmp_path / "sentinel"
    values = [value for value in hostile(sentinel) if value]  # empty = not set
    names = tuple(f"HOSTILE_{index}" for index in range(len(values)))
    for name, value in zip(names, values, strict=True):
        monkeypatch.setenv(name, value)
    password = f"pw'$(touch {sentinel})`x`;\"ü"
    config.store_password("sprites", None, SANDBOX, password)
    risky = dataclasses.replace(settings, forward_secrets=names)
    env_file = tmp_path / "secrets.env"
    env_file.write_text(spawning.secrets_env(risky))

    seen = sourced(env_file, tmp_path)

    assert {name: seen[name] for name in names} == dict(zip(names, values, strict=True))
    assert seen["OPENCODE_SERVER_PASSWORD"] == password
    assert not sentinel.exists()


def test_server_env_gives_bash_the_render_values_byte_for_byte(
    settings: config.Settings, tmp_path: Path
) -> None:
    sentinel = tmp_path / "sentinel"
    (settings.render / "server.env").write_text(
        f"OPENCODE_DISABLE_AUTOUPDATE='$(touch {sentinel})'\n"
        f"HTTP_PROXY='http://proxy.test:3128/`touch {sentinel}`'\n"
        'GREETING="two\\nlines; ünïcødé"\n'
    )
    env_file = tmp_path / "server.env"
    env_file.write_text(spawning.server_env(settings))

    seen = sourced(env_file, tmp_path)

    assert seen["OPENCODE_DISABLE_AUTOUPDATE"] == f"$(touch {sentinel})"
    assert seen["HTTP_PROXY"] == f"http://proxy.test:3128/`touch {sentinel}`"
    assert seen["GREETING"] == "two\nlines; ünïcødé"
    assert not sentinel.exists()


def test_a_dry_run_secrets_file_holds_a_stand_in_password_and_stores_none(
    settings: config.Settings,
) -> None:
    text = spawning.secrets_env(settings, dry_run=True)
    assert text == f"export OPENCODE_SERVER_PASSWORD={'x' * 43}\n"
    assert not config.password_path("sprites", None, SANDBOX).exists()


def prompt_of_every_kind(size: int) -> str:
    pieces = [
        "quote ' double \" backtick ` ",
        "$(rm -rf ~) ${HOME} $HOME ; && || | > < ",
        "\\ \\n \\u0000 %s {{ jinja }} </script> ",
        "newline\n crlf\r\n tab\t nul\x00 bell\x07 escape\x1b[31m ",
        "ünïcødé 日本語 🚀👩‍👩‍👧 e\u0301 \u202eRTL \u2028\u2029 \ufeff ",
        "::af-remote:: result {} ",
    ]
    text = "".join(pieces)
    return (text * (size // len(text.encode()) + 1))[:size]


def test_prepare_files_writes_the_prompt_byte_for_byte_and_secrets_0600(
    settings: config.Settings, tmp_path: Path
) -> None:
    prompt = prompt_of_every_kind(100 * 1024)
    assert len(prompt.encode()) > 100_000
    request = Request(
        prompt=prompt, title="t", request_id=None, dry_run=False, as_json=False
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    files = spawning.prepare_files(
        scratch, settings, request, {"spawn_id": "spw_1"}, "new"
    )

    assert list(files) == [*SCRIPTS, *GENERATED, "prompt.json", "source.bundle"]
    body = json.loads(files["prompt.json"].read_bytes().decode("utf-8"))
    assert body == {"parts": [{"type": "text", "text": prompt}]}
    assert body["parts"][0]["text"].encode("utf-8") == prompt.encode("utf-8")
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o700
    assert stat.S_IMODE(files["secrets.env"].stat().st_mode) == 0o600
    assert stat.S_IMODE(files["spawn.env"].stat().st_mode) == 0o644
    password = config.server_password("sprites", None, SANDBOX)
    assert files["secrets.env"].read_text() == (
        f"export OPENCODE_SERVER_PASSWORD={shlex.quote(password)}\n"
    )
    assert json.loads(files["session.json"].read_text()) == {"title": "t"}
    assert files["bootstrap.sh"] == settings.render / "bootstrap.sh"


# --- the prompt and the title -----------------------------------------------------


def test_read_prompt_from_text_file_and_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = prompt_of_every_kind(5000)
    assert spawning.read_prompt(prompt, None) == prompt
    assert spawning.read_prompt(None, None) is None
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes(prompt.encode("utf-8"))
    assert spawning.read_prompt(None, str(prompt_file)) == prompt
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(prompt.encode())))
    assert spawning.read_prompt(None, "-") == prompt


def test_read_prompt_takes_exactly_1_mib_and_no_more(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes(b"a" * spawning.MAX_PROMPT_BYTES)
    assert len(spawning.read_prompt(None, str(prompt_file)) or "") == 1024 * 1024
    prompt_file.write_bytes(b"a" * (spawning.MAX_PROMPT_BYTES + 1))
    with pytest.raises(UsageError) as caught:
        spawning.read_prompt(None, str(prompt_file))
    assert caught.value.message == (
        "the prompt is 1048577 bytes; at most 1 MiB is allowed"
    )


def test_read_prompt_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        spawning.read_prompt(None, str(tmp_path / "nope.txt"))
    assert caught.value.message.startswith(
        f"cannot read --prompt-file {tmp_path / 'nope.txt'}: "
    )


def test_a_prompt_file_that_is_not_utf8_exits_2(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli, no_sprite: str
) -> None:
    prompt_file = scratch_repo / "prompt.bin"
    prompt_file.write_bytes(b"fix \xff\xfe the thing")
    result = run_cli(
        "up", "--dry-run", "--prompt-file", str(prompt_file), cwd=scratch_repo
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"af-remote: error: --prompt-file {prompt_file} is not UTF-8: "
    )
    assert len(result.stderr.splitlines()) == 1


def test_a_prompt_over_1_mib_from_stdin_exits_2(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    no_sprite: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    too_big = b"y" * (spawning.MAX_PROMPT_BYTES + 1)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(too_big)))
    result = run_cli("up", "--dry-run", "--prompt-file", "-", cwd=scratch_repo)
    assert result.exit_code == 2
    assert result.stderr == (
        "af-remote: error: the prompt is 1048577 bytes; at most 1 MiB is allowed\n"
    )


def test_a_prompt_argument_that_is_not_utf8_exits_2(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli, no_sprite: str
) -> None:
    not_utf8 = b"fix \xff it".decode("utf-8", "surrogateescape")
    result = run_cli("up", "--dry-run", "--prompt", not_utf8, cwd=scratch_repo)
    assert result.exit_code == 2
    assert "not UTF-8" in result.stderr


@pytest.mark.parametrize(
    ("prompt", "title"),
    [
        ("fix the flaky login test\nit fails on CI", "fix the flaky login test"),
        ("\n\n   indented first line  \nsecond", "indented first line"),
        ("x" * 60, "x" * 60),
        ("y" * 61, "y" * 59 + "…"),
        ("ü" * 80 + "\nrest", "ü" * 59 + "…"),
        (None, "af-remote: my-project"),
        ("", "af-remote: my-project"),
        ("  \n\t\n ", "af-remote: my-project"),
    ],
)
def test_default_title(prompt: str | None, title: str) -> None:
    assert spawning.default_title(prompt, Path("/home/me/my-project")) == title


# --- --dry-run ------------------------------------------------------------------------


def uploads_argv(render: Path, scratch: str, names: list[str]) -> list[str]:
    argv = []
    for name in names:
        local_path = render / name if name in SCRIPTS else Path(scratch) / name
        argv += ["--file", f"{local_path}:/tmp/af-remote.{DRY}.{name}"]
    return argv


def test_dry_run_prints_the_exact_commands_and_changes_nothing(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    no_sprite: str,
    fp: FakeProcess,
    isolated_environment: Path,
) -> None:
    prompt = "fix the 'login' test; $(whoami)"
    result = run_cli("up", "--dry-run", "--prompt", prompt, cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Would run (new spawn, nothing changed):"
    assert lines[1] == f"  sprite create --skip-console {SANDBOX}"
    exec_argv = shlex.split(lines[2])
    config_upload = next(
        arg for arg in exec_argv if arg.endswith(f":/tmp/af-remote.{DRY}.opencode.json")
    )
    scratch = str(Path(config_upload.split(":")[0]).parent)
    names = [*SCRIPTS, *GENERATED, "prompt.json", "source.bundle"]
    render = project.root(scratch_repo) / ".af-remote" / "sprites"
    assert exec_argv == [
        "sprite",
        "exec",
        "-s",
        SANDBOX,
        *uploads_argv(render, scratch, names),
        "--",
        "bash",
        f"/tmp/af-remote.{DRY}.bootstrap.sh",
    ]
    assert Path(scratch).name.startswith("af-remote-dry-run-")
    assert not Path(scratch).exists()  # the dry run cleaned up after itself
    assert lines[3] == "Uploads:"
    listed = dict(line.split()[:2] for line in lines[4:])
    assert list(listed) == names
    body = json.dumps({"parts": [{"type": "text", "text": prompt}]})
    assert int(listed["prompt.json"]) == len(body.encode())
    assert int(listed["bootstrap.sh"]) == (render / "bootstrap.sh").stat().st_size

    assert not (paths.registry_dir() / "remote_spawns.json").exists()
    assert not (paths.af_remote_config_dir() / "passwords").exists()
    assert not [call for call in fp.calls if call[0] == no_sprite]


def test_dry_run_json_shape(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli, no_sprite: str
) -> None:
    result = run_cli("up", "--dry-run", "--json", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"mode", "commands", "uploads"}
    assert document["mode"] == "new"
    assert document["commands"][0] == f"sprite create --skip-console {SANDBOX}"
    assert document["commands"][1].startswith(f"sprite exec -s {SANDBOX} --file ")
    assert document["commands"][1].endswith(
        f" -- bash /tmp/af-remote.{DRY}.bootstrap.sh"
    )
    assert len(document["commands"]) == 2
    # No prompt: nothing to send as one.
    assert sorted(document["uploads"]) == sorted(
        [*SCRIPTS, *GENERATED, "source.bundle"]
    )
    assert document["uploads"]["secrets.env"] == len(
        f"export OPENCODE_SERVER_PASSWORD={'x' * 43}\n"
    )
    assert all(
        isinstance(size, int) and size > 0 for size in document["uploads"].values()
    )


def test_dry_run_on_a_sandbox_the_records_know_plans_one_call(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli, no_sprite: str
) -> None:
    registry = Registry()
    known = registry.create_spawn(
        provider="sprites",
        sandbox=SANDBOX,
        af_remote={"org": None, "sandbox_ready": True},
    )
    registry.update_spawn(known["spawn_id"], state="running")
    before = (paths.registry_dir() / "remote_spawns.json").read_bytes()

    result = run_cli("up", "--dry-run", "--json", "--prompt", "more", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    commands = json.loads(result.stdout)["commands"]
    assert len(commands) == 1
    assert commands[0].startswith(f"sprite exec -s {SANDBOX} ")
    assert (paths.registry_dir() / "remote_spawns.json").read_bytes() == before


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_request_id_reused_for_another_prompt_is_a_conflict(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    no_sprite: str,
    dry_run: bool,
) -> None:
    Registry().create_spawn(
        provider="sprites",
        sandbox=SANDBOX,
        request_id="req-1",
        af_remote={"org": None, "payload_digest": "0" * 64, "has_prompt": True},
    )
    before = (paths.registry_dir() / "remote_spawns.json").read_bytes()
    flags = ["--dry-run"] if dry_run else []

    result = run_cli(
        "up",
        *flags,
        "--prompt",
        "something else",
        "--request-id",
        "req-1",
        cwd=scratch_repo,
    )

    assert result.exit_code == 2
    assert result.stderr == (
        "af-remote: error: request id 'req-1' was used for a different prompt or "
        "target (use a new --request-id for a new request)\n"
    )
    assert (paths.registry_dir() / "remote_spawns.json").read_bytes() == before
    assert not (paths.af_remote_config_dir() / "passwords").exists()


def test_a_request_id_of_a_running_spawn_returns_it_unchanged(
    sprites_render: Path,
    scratch_repo: Path,
    settings: config.Settings,
    run_cli: RunCli,
    no_sprite: str,
) -> None:
    prompt = "the same prompt"
    request = Request(
        prompt=prompt, title=prompt, request_id="req-2", dry_run=False, as_json=True
    )
    digest = spawning._digest(settings, request)
    registry = Registry()
    existing = registry.create_spawn(
        provider="sprites",
        sandbox=SANDBOX,
        request_id="req-2",
        af_remote={"org": None, "payload_digest": digest},
    )
    registry.update_spawn(existing["spawn_id"], state="running", session_id="ses_9")

    result = run_cli(
        "up", "--json", "--prompt", prompt, "--request-id", "req-2", cwd=scratch_repo
    )

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["spawn_id"], document["session_id"]) == (
        existing["spawn_id"],
        "ses_9",
    )
    assert (document["changed"], document["provider_calls"]) == (False, 0)
    assert document["next_commands"] == [
        f"af-remote attach {existing['spawn_id']}",
        f"sprite console -s {SANDBOX}",
        f"sprite destroy --force {SANDBOX}",
    ]
    assert set(document) == {
        *SPAWN_KEYS,
        "next_commands",
        "changed",
        "provider_calls",
    }
    assert len(Registry().spawns()) == 1
