"""Settings: flags > environment > the render's .env > defaults, strictly checked.

Every test starts from a real render made by `af-remote init`, then edits its .env
the way a user would.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from af_remote import config, redact
from af_remote.errors import AfRemoteError, UsageError
from conftest import MODEL_KEYS, RunCli, cached_render

SANDBOX = "af-my-project"  # what init derives from the folder name `my-project`
pytestmark = pytest.mark.usefixtures("no_model_keys")


def set_env_file(render_dir: Path, **values: str) -> None:
    """Set ``AF_REMOTE_<KEY>=value`` in .env, replacing a line or adding one."""
    path = render_dir / ".env"
    text = path.read_text(encoding="utf-8")
    for key, value in values.items():
        line = f"AF_REMOTE_{key}='{value}'"
        pattern = re.compile(rf"^AF_REMOTE_{key}=.*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub(line, text, count=1)
        else:
            text += line + "\n"
    path.write_text(text, encoding="utf-8")


def load(repo: Path, provider: str = "sprites", **kwargs: object) -> config.Settings:
    kwargs.setdefault("environ", {})
    return config.load(repo, provider, **kwargs)  # type: ignore[arg-type]


# --- defaults and precedence ------------------------------------------------------


def test_a_fresh_sprites_render_loads_its_defaults(
    sprites_render: Path, scratch_repo: Path
) -> None:
    settings = load(scratch_repo)
    assert settings == config.Settings(
        provider="sprites",
        project_root=scratch_repo,
        render=sprites_render,
        sandbox=SANDBOX,
        org=None,
        opencode_version="1.18.33",
        server_port=8080,
        model=None,
        url_auth="sprite",
        source="bundle",
        source_url=None,
        source_ref=None,
        forward_secrets=MODEL_KEYS,
        keepalive=True,
        keepalive_interval=10,
        keepalive_expire=60,
        opencode_prefix=None,
    )


def test_a_fresh_local_render_lets_the_system_pick_the_port(
    run_cli: RunCli, scratch_repo: Path, pristine_renders: Path
) -> None:
    cached_render(run_cli, scratch_repo, "local", pristine_renders)
    settings = load(scratch_repo, "local")
    assert (settings.provider, settings.sandbox, settings.server_port) == (
        "local",
        SANDBOX,
        0,
    )


# (key, Settings attribute, .env value, environment value, flag value, parsed values
# for those three in that order)
LAYERED = [
    ("SANDBOX", "sandbox", "from-file", "from-env", "from-flag", None),
    ("ORG", "org", "file-org", "env-org", "flag-org", None),
    ("SERVER_PORT", "server_port", "9000", "9100", "9200", (9000, 9100, 9200)),
    ("MODEL", "model", "f/model", "e/model", "x/model", None),
    ("KEEPALIVE", "keepalive", "off", "on", "off", (False, True, False)),
    ("KEEPALIVE_INTERVAL", "keepalive_interval", "5", "12", "20", (5, 12, 20)),
    ("OPENCODE_VERSION", "opencode_version", "1.2.3", "1.2.4-rc.1", "2.0.0", None),
]


@pytest.mark.parametrize(
    ("key", "attribute", "in_file", "in_env", "in_flag", "parsed"),
    LAYERED,
    ids=[row[0] for row in LAYERED],
)
def test_each_layer_overrides_the_one_below(
    sprites_render: Path,
    scratch_repo: Path,
    key: str,
    attribute: str,
    in_file: str,
    in_env: str,
    in_flag: str,
    parsed: tuple[object, object, object] | None,
) -> None:
    expected = parsed or (in_file, in_env, in_flag)
    environ = {f"AF_REMOTE_{key}": in_env}
    default = getattr(load(scratch_repo), attribute)

    set_env_file(sprites_render, **{key: in_file})
    assert getattr(load(scratch_repo), attribute) == expected[0] != default
    assert getattr(load(scratch_repo, environ=environ), attribute) == expected[1]
    flagged = load(scratch_repo, environ=environ, flags={key: in_flag})
    assert getattr(flagged, attribute) == expected[2]
    # A flag left unset (None) does not hide the layers below.
    unset = load(scratch_repo, environ=environ, flags={key: None})
    assert getattr(unset, attribute) == expected[1]


def test_unknown_environment_names_are_ignored(
    sprites_render: Path, scratch_repo: Path
) -> None:
    environ = {"AF_REMOTE_SERVER_PROT": "not a port", "AF_REMOTE_": "x"}
    assert load(scratch_repo, environ=environ).server_port == 8080


def test_a_key_missing_from_env_file_falls_back_to_its_default(
    sprites_render: Path, scratch_repo: Path
) -> None:
    env_file = sprites_render / ".env"
    kept = [
        line
        for line in env_file.read_text().splitlines()
        if not line.startswith("AF_REMOTE_SERVER_PORT=")
    ]
    env_file.write_text("\n".join(kept) + "\n")
    assert load(scratch_repo).server_port == 8080


def test_the_sandbox_name_may_come_from_the_environment_alone(
    sprites_render: Path, scratch_repo: Path
) -> None:
    env_file = sprites_render / ".env"
    kept = [
        line
        for line in env_file.read_text().splitlines()
        if not line.startswith("AF_REMOTE_SANDBOX=")
    ]
    env_file.write_text("\n".join(kept) + "\n")
    with pytest.raises(AfRemoteError) as caught:
        load(scratch_repo)
    assert caught.value.message == f"{env_file} sets no AF_REMOTE_SANDBOX"
    environ = {"AF_REMOTE_SANDBOX": "from-env"}
    assert load(scratch_repo, environ=environ).sandbox == "from-env"


def test_precedence_through_the_cli(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def planned_create(*flags: str) -> str:
        result = run_cli(
            "up", "--dry-run", "--json", "--prompt", "x", *flags, cwd=scratch_repo
        )
        assert result.exit_code == 0, result.stderr
        commands: list[str] = json.loads(result.stdout)["commands"]
        return commands[0]

    set_env_file(sprites_render, SANDBOX="from-file", ORG="file-org")
    assert planned_create() == "sprite create -o file-org --skip-console from-file"
    monkeypatch.setenv("AF_REMOTE_SANDBOX", "from-env")
    assert planned_create() == "sprite create -o file-org --skip-console from-env"
    assert (
        planned_create("--name", "from-flag")
        == "sprite create -o file-org --skip-console from-flag"
    )


# --- bad values name their source ------------------------------------------------

BAD_VALUES = [
    ("SANDBOX", "Bad_Name", "must be a DNS label (a-z, 0-9, -)"),
    ("SANDBOX", "-leading-hyphen", "must be a DNS label (a-z, 0-9, -)"),
    ("ORG", "acme inc", "letters, digits, - and _"),
    ("OPENCODE_VERSION", "latest", "a version like 1.18.33"),
    ("SERVER_PORT", "0", "must be a whole number from 1 to 65535"),
    ("SERVER_PORT", "65536", "must be a whole number from 1 to 65535"),
    ("SERVER_PORT", "http", "must be a whole number from 1 to 65535"),
    ("MODEL", "anthropic/claude sonnet", "provider/model"),
    ("URL_AUTH", "private", "must be one of sprite, public"),
    ("SOURCE", "rsync", "must be one of bundle, clone"),
    ("SOURCE_URL", "https://x.test/a b.git", "must be a git URL without spaces"),
    ("SOURCE_REF", "main;rm", "a branch, tag or commit"),
    ("KEEPALIVE", "yes", "must be one of on, off"),
    ("KEEPALIVE_INTERVAL", "0", "must be a whole number from 1 to 25"),
    ("KEEPALIVE_EXPIRE", "4", "must be a whole number from 5 to 3600"),
]


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    BAD_VALUES,
    ids=[f"{k}={v}" for k, v, _ in BAD_VALUES],
)
@pytest.mark.parametrize("layer", ["file", "environment"])
def test_a_bad_value_names_its_source_and_exits_2(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    value: str,
    complaint: str,
    layer: str,
) -> None:
    if layer == "file":
        set_env_file(sprites_render, **{key: value})
        source = str(sprites_render / ".env")
    else:
        monkeypatch.setenv(f"AF_REMOTE_{key}", value)
        source = f"environment variable AF_REMOTE_{key}"

    result = run_cli("up", "--dry-run", "--prompt", "x", cwd=scratch_repo)

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"af-remote: error: AF_REMOTE_{key}={value!r} from {source}: {complaint}"
    )
    assert result.stdout == ""


def test_a_bad_sprite_name_from_the_flag_is_refused(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli(
        "up", "--dry-run", "--prompt", "x", "--name", "Bad_Name", cwd=scratch_repo
    )
    assert result.exit_code == 2
    assert "AF_REMOTE_SANDBOX='Bad_Name'" in result.stderr


def test_a_bad_sprite_name_from_the_flag_names_the_flag(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli(
        "up", "--dry-run", "--prompt", "x", "--name", "Bad_Name", cwd=scratch_repo
    )
    assert "from --name:" in result.stderr


def test_a_bad_forwarded_secret_name_names_its_source(
    sprites_render: Path, scratch_repo: Path
) -> None:
    set_env_file(sprites_render, FORWARD_SECRETS="ANTHROPIC_API_KEY, 1PASSWORD")
    with pytest.raises(UsageError) as caught:
        load(scratch_repo)
    assert caught.value.message == (
        f"AF_REMOTE_FORWARD_SECRETS names '1PASSWORD' (from {sprites_render / '.env'}):"
        " not an environment variable name"
    )


def test_clone_without_a_url_is_refused(
    sprites_render: Path, scratch_repo: Path
) -> None:
    set_env_file(sprites_render, SOURCE="clone")
    with pytest.raises(UsageError) as caught:
        load(scratch_repo)
    assert caught.value.message == "AF_REMOTE_SOURCE=clone needs AF_REMOTE_SOURCE_URL"
    settings = load(
        scratch_repo, environ={"AF_REMOTE_SOURCE_URL": "https://git.test/x.git"}
    )
    assert (settings.source, settings.source_url) == ("clone", "https://git.test/x.git")


def test_an_empty_sandbox_name_is_refused(
    sprites_render: Path, scratch_repo: Path
) -> None:
    with pytest.raises(UsageError) as caught:
        load(scratch_repo, environ={"AF_REMOTE_SANDBOX": "  "})
    assert caught.value.message == (
        "AF_REMOTE_SANDBOX is empty (from environment variable AF_REMOTE_SANDBOX)"
    )


# --- the .env file itself ---------------------------------------------------------


def test_a_line_that_does_not_parse_names_the_file_and_line(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    env_file = sprites_render / ".env"
    lines = env_file.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("AF_REMOTE_ORG="))
    lines[index] = 'AF_REMOTE_ORG="acme"inc'  # text after the closing quote
    env_file.write_text("\n".join(lines) + "\n")

    result = run_cli("up", "--dry-run", "--prompt", "x", cwd=scratch_repo)

    assert result.exit_code == 1
    assert result.stderr == (
        f"af-remote: error: {env_file} line {index + 1} does not parse: "
        "'AF_REMOTE_ORG=\"acme\"inc'\n"
    )


def test_a_bad_line_after_a_blank_line_is_reported_at_its_own_line(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AF_REMOTE_SANDBOX=a\n\nthis is not a setting\n")
    with pytest.raises(AfRemoteError) as caught:
        config.read_env_file(env_file)
    assert f"{env_file} line 3 does not parse" in caught.value.message


def test_a_missing_env_file_says_how_to_get_it_back(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    (sprites_render / ".env").unlink()
    result = run_cli("up", "--dry-run", "--prompt", "x", cwd=scratch_repo)
    assert result.exit_code == 1
    assert result.stderr == (
        f"af-remote: error: {sprites_render / '.env'} is missing (re-render with "
        "`af-remote init --force`, or restore it from git)\n"
    )


def test_an_env_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"AF_REMOTE_ORG='\xff'\n")
    with pytest.raises(AfRemoteError) as caught:
        config.read_env_file(env_file)
    assert caught.value.message.startswith(f"cannot read {env_file}: ")


# --- secrets ------------------------------------------------------------------------


def test_forwarded_secrets_take_the_environment_first_then_secrets_env(
    sprites_render: Path, scratch_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sprites_render / "secrets.env").write_text(
        "ANTHROPIC_API_KEY=sk-file-anthropic\nOPENAI_API_KEY='sk-file-openai'\n"
    )
    settings = load(scratch_repo)
    capsys.readouterr()

    values = config.forwarded_secrets(
        settings, environ={"ANTHROPIC_API_KEY": "sk-env-anthropic", "OTHER": "x"}
    )

    assert values == {
        "ANTHROPIC_API_KEY": "sk-env-anthropic",
        "OPENAI_API_KEY": "sk-file-openai",
    }
    assert redact.redact("a sk-env-anthropic b sk-file-openai") == (
        f"a {redact.MASK} b {redact.MASK}"
    )
    assert capsys.readouterr().err == ""


def test_forwarded_secrets_read_the_process_environment_by_default(
    sprites_render: Path, scratch_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-from-env")
    values = config.forwarded_secrets(load(scratch_repo))
    assert values == {"OPENROUTER_API_KEY": "sk-or-from-env"}


def test_no_secret_to_forward_is_a_warning(
    sprites_render: Path, scratch_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load(scratch_repo)
    capsys.readouterr()
    assert config.forwarded_secrets(settings, environ={}) == {}
    assert capsys.readouterr().err == (
        "af-remote: warning: no secret to forward: set one of ANTHROPIC_API_KEY, "
        "OPENAI_API_KEY, OPENROUTER_API_KEY (or put it in "
        f"{sprites_render / 'secrets.env'}) so the agent can reach its model\n"
    )


def test_a_bad_line_in_secrets_env_names_that_file(
    sprites_render: Path, scratch_repo: Path
) -> None:
    secrets_file = sprites_render / "secrets.env"
    secrets_file.write_text("OPENAI_API_KEY='sk-unterminated\n")
    with pytest.raises(AfRemoteError) as caught:
        config.forwarded_secrets(load(scratch_repo), environ={})
    assert caught.value.message.startswith(f"{secrets_file} line 1 does not parse")
    # The line that does not parse is a secret nobody registered for redaction.
    assert "sk-unterminated" not in caught.value.message


def test_server_password_is_made_once_in_a_private_file(
    isolated_environment: Path,
) -> None:
    password = config.server_password("sprites", "acme", "af-x")

    path = isolated_environment / ".config" / "af-remote" / "passwords"
    path = path / "sprites--acme--af-x"
    assert path.read_text() == password + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", password)
    assert config.server_password("sprites", "acme", "af-x") == password
    assert redact.redact(f"auth {password}") == f"auth {redact.MASK}"


def test_server_passwords_differ_per_sandbox_org_and_provider() -> None:
    passwords = {
        config.server_password("sprites", "acme", "af-x"),
        config.server_password("sprites", None, "af-x"),
        config.server_password("sprites", "acme", "af-y"),
        config.server_password("local", None, "af-x"),
    }
    assert len(passwords) == 4


def test_a_stored_password_is_read_back_and_redacted() -> None:
    config.store_password("sprites", None, "af-x", "fetched-from-the-sprite")
    redact.clear()
    assert config.server_password("sprites", None, "af-x") == "fetched-from-the-sprite"
    assert redact.redact("fetched-from-the-sprite") == redact.MASK


def test_storing_a_password_tightens_a_loose_file() -> None:
    path = config.password_path("sprites", None, "af-x")
    path.parent.mkdir(parents=True)
    path.write_text("old\n")
    os.chmod(path, 0o644)
    config.store_password("sprites", None, "af-x", "new-password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "new-password\n"
