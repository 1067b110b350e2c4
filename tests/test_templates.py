"""The rendered files: shell that passes bash -n and shellcheck, and answers that stay
data whatever they contain."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from af_remote import project
from conftest import RunCli, require_tool

# Valid answers at the edges of what each question accepts.
UNUSUAL = {
    "sprites": {
        "sandbox": "a" + "-b" * 31,
        "org": "Acme_Corp-1",
        "opencode_version": "2.0.0-rc.1",
        "server_port": "65535",
        "model": "openrouter/meta-llama/llama-3.1-8b-instruct:free",
        "url_auth": "public",
        "source": "clone",
        "source_url": "https://deploy@git.example.com:8443/acme/app~1.git",
        "forward_secrets": "_X,Y2",
        "keepalive": "off",
    },
    "local": {
        "sandbox": "0",
        "opencode_version": "0.0.1",
        "server_port": "65535",
        "model": "ollama/qwen2.5-coder:7b@q4",
        "forward_secrets": "",
    },
}

ANSWER_SETS = [
    pytest.param(provider, answers, id=f"{provider}-{name}")
    for provider in project.PROVIDERS
    for name, answers in (("defaults", {}), ("unusual", UNUSUAL[provider]))
]


def questions(provider: str) -> dict[str, dict[str, object]]:
    config = yaml.safe_load((project.template(provider) / "copier.yml").read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}


def string_questions(provider: str) -> list[str]:
    return [
        key
        for key, question in questions(provider).items()
        if question.get("type", "str") == "str"
    ]


def env_key(question: str) -> str:
    return f"AF_REMOTE_{question.upper()}"


def init_argv(provider: str, answers: dict[str, str]) -> list[str]:
    argv = ["init", "--provider", provider, "--defaults"]
    for key, value in answers.items():
        argv += ["--data", f"{key}={value}"]
    return argv


@pytest.mark.parametrize(("provider", "answers"), ANSWER_SETS)
def test_rendered_shell_passes_bash_n_and_shellcheck(
    provider: str, answers: dict[str, str], tmp_path: Path, run_cli: RunCli
) -> None:
    shellcheck = require_tool("shellcheck")
    result = run_cli(*init_argv(provider, answers), cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    render = tmp_path / ".af-remote" / provider
    scripts = sorted(render.glob("*.sh"))
    assert {"bootstrap.sh", "serve.sh"} <= {script.name for script in scripts}

    for script in scripts:
        syntax = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert syntax.returncode == 0, f"{script.name}: {syntax.stderr}"
    lint = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout


@pytest.mark.parametrize(("provider", "answers"), ANSWER_SETS)
def test_answers_reach_the_settings_and_never_the_scripts(
    provider: str, answers: dict[str, str], tmp_path: Path, run_cli: RunCli
) -> None:
    """The scripts are the template's own bytes; the answers live in .env only."""
    result = run_cli(*init_argv(provider, answers), cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    render = tmp_path / ".af-remote" / provider
    template = project.template(provider)

    for script in template.glob("*.sh"):
        assert (render / script.name).read_bytes() == script.read_bytes()
    env = dotenv_values(render / ".env")
    for key, value in answers.items():
        if key != "keepalive":
            assert env[env_key(key)] == value


INJECTIONS = [
    pytest.param("x'y", id="single-quote"),
    pytest.param('x"y', id="double-quote"),
    pytest.param("x$(touch {sentinel})", id="command-substitution"),
    pytest.param("x`touch {sentinel}`", id="backticks"),
    pytest.param("x;touch {sentinel}", id="semicolon"),
    pytest.param("x touch", id="space"),
    pytest.param("x\ntouch {sentinel}", id="newline"),
    pytest.param("x\\", id="backslash"),
]

INJECTION_CASES = [
    pytest.param(
        provider, key, *injection.values, id=f"{provider}-{key}-{injection.id}"
    )
    for provider in project.PROVIDERS
    for key in string_questions(provider)
    for injection in INJECTIONS
]


@pytest.mark.parametrize(("provider", "key", "payload"), INJECTION_CASES)
def test_injection_answer_is_refused_and_nothing_written(
    provider: str, key: str, payload: str, tmp_path: Path, run_cli: RunCli
) -> None:
    sentinel = tmp_path / "executed"
    value = payload.replace("{sentinel}", str(sentinel))
    answers = {key: value}
    if key == "source_url":
        answers["source"] = "clone"

    result = run_cli(*init_argv(provider, answers), cwd=tmp_path)

    assert result.exit_code == 2, result.stdout
    assert f"'{key}'" in result.stderr or f"--data {key}" in result.stderr
    assert not (tmp_path / ".af-remote").exists()
    assert not sentinel.exists()


PIECES = st.sampled_from(
    [
        "'",
        '"',
        "$(touch {sentinel})",
        "`touch {sentinel}`",
        ";",
        " ",
        "\n",
        "\r",
        "\t",
        "\\",
        "#",
        "=",
        "${HOME}",
        "$HOME",
        "é",
        "-",
        ".",
        "/",
        ":",
        ",",
    ]
)
WORDS = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._/:@+~%-]{0,12}", fullmatch=True)
VALUES = st.one_of(
    WORDS,
    st.sampled_from(["", "1.2.3", "bundle", "clone", "sprite", "public", "A,B_2"]),
    st.lists(st.one_of(WORDS, PIECES), min_size=1, max_size=4).map("".join),
    st.text(max_size=10),
)

PROPERTY_CASES = [
    pytest.param(provider, key, id=f"{provider}-{key}")
    for provider in project.PROVIDERS
    for key in string_questions(provider)
]


@pytest.mark.parametrize(("provider", "key"), PROPERTY_CASES)
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(template_value=VALUES)
def test_any_answer_is_refused_or_read_back_exactly(
    provider: str, key: str, template_value: str, tmp_path: Path, run_cli: RunCli
) -> None:
    """Each answer is refused with nothing written, or is in .env as exactly itself."""
    workdir = tmp_path / f"case-{next(_CASES)}"
    workdir.mkdir()
    sentinel = tmp_path / "executed"
    value = template_value.replace("{sentinel}", str(sentinel))

    result = run_cli(*init_argv(provider, {key: value}), cwd=workdir)

    render = workdir / ".af-remote" / provider
    if result.exit_code != 0:
        assert result.exit_code == 2, result.stderr
        assert not (workdir / ".af-remote").exists()
    else:
        env = dotenv_values(render / ".env")
        if key == "project_slug":
            assert env["AF_REMOTE_SANDBOX"] == f"af-{value}"
        else:
            assert env[env_key(key)] == value
    assert not sentinel.exists()


_CASES = itertools.count()


# The providers' bootstraps share most steps. Copier renders each template alone
# (links out of a template are refused), so the shared steps are written twice;
# this keeps the two copies from drifting apart.
SHARED_STEPS = (
    "step",
    "fail",
    "on_error",
    "json_get",
    "urlencode",
    "api",
    "install_secrets",
    "fetch_source",
    "place_source",
    "install_file",
    "create_session",
    "print_result",
)


def _bash_function(script: str, name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", script, re.MULTILINE | re.DOTALL)
    assert match, f"bootstrap.sh has no function {name}"
    return match.group(0)


@pytest.mark.parametrize("name", SHARED_STEPS)
def test_shared_bootstrap_steps_are_the_same_in_both_templates(name: str) -> None:
    templates = project.templates_dir()
    sprites = (templates / "sprites" / "bootstrap.sh").read_text()
    local = (templates / "local" / "bootstrap.sh").read_text()
    assert _bash_function(sprites, name) == _bash_function(local, name)
