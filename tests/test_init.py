"""`af-remote init`: where it renders, what it renders, and what it refuses."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from af_remote import project
from af_remote.render import BASE_DIR
from conftest import GLUE, RunCli, git, require_tool

# The files each provider must render; a template may render more, never less.
REQUIRED = {
    "sprites": {
        ".env",
        ".gitignore",
        "README.md",
        "bootstrap.sh",
        "serve.sh",
        "keepalive.sh",
        project.ANSWERS_FILE,
    },
    "local": {
        ".env",
        ".gitignore",
        "README.md",
        "bootstrap.sh",
        "serve.sh",
        project.ANSWERS_FILE,
    },
}


def template_outputs(provider: str) -> set[str]:
    """The file names the template should produce, read off the template itself."""
    template = project.template(provider)
    names = set()
    for path in template.rglob("*"):
        if not path.is_file() or path.name == "copier.yml":
            continue
        name = path.relative_to(template).as_posix()
        name = name.replace("{{_copier_conf.answers_file}}", project.ANSWERS_FILE)
        names.add(name.removesuffix(".jinja"))
    return names


def rendered_files(directory: Path) -> set[str]:
    return {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and BASE_DIR not in path.relative_to(directory).parts
    }


def read_env(render: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values

    return dict(dotenv_values(render / ".env"))


@pytest.mark.parametrize("provider", project.PROVIDERS)
def test_defaults_render_every_file_of_the_template(
    provider: str, scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli("init", "--provider", provider, "--defaults", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    render = scratch_repo / ".af-remote" / provider
    files = rendered_files(render)
    assert files == template_outputs(provider)
    assert REQUIRED[provider] <= files
    for name in files - {project.ANSWERS_FILE}:
        assert f"  {name}\n" in result.stdout
    # The pristine copy that `update` merges against is the render itself.
    base = render / BASE_DIR
    assert rendered_files(base) == files - {project.ANSWERS_FILE}
    for name in rendered_files(base):
        assert (base / name).read_bytes() == (render / name).read_bytes()


@pytest.mark.parametrize("provider", project.PROVIDERS)
def test_answers_file_records_the_answers_and_provider(
    provider: str, scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli(
        "init",
        "--provider",
        provider,
        "--defaults",
        "--data",
        "sandbox=team-box",
        "--data",
        "model=anthropic/claude-sonnet-4-5",
        cwd=scratch_repo,
    )

    assert result.exit_code == 0, result.stderr
    render = scratch_repo / ".af-remote" / provider
    answers = yaml.safe_load((render / project.ANSWERS_FILE).read_text())
    assert answers["_af_remote_provider"] == provider
    assert answers["sandbox"] == "team-box"
    assert answers["model"] == "anthropic/claude-sonnet-4-5"
    env = read_env(render)
    assert env["AF_REMOTE_SANDBOX"] == "team-box"
    assert env["AF_REMOTE_MODEL"] == "anthropic/claude-sonnet-4-5"


def test_sprite_name_defaults_to_the_project_folder_as_a_dns_label(
    tmp_path: Path, run_cli: RunCli
) -> None:
    folder = tmp_path / "My Project_2.0 (draft)"
    folder.mkdir()
    git(folder, "init", "--quiet")

    result = run_cli("init", "--provider", "sprites", "--defaults", cwd=folder)

    assert result.exit_code == 0, result.stderr
    env = read_env(folder / ".af-remote" / "sprites")
    assert env["AF_REMOTE_SANDBOX"] == "af-my-project-2-0-draft"
    assert env["AF_REMOTE_SERVER_PORT"] == "8080"
    assert env["AF_REMOTE_URL_AUTH"] == "sprite"
    assert env["AF_REMOTE_KEEPALIVE"] == "on"


def test_renders_at_the_git_root_from_a_subdirectory(
    scratch_repo: Path, run_cli: RunCli
) -> None:
    subdirectory = scratch_repo / "src" / "deep"
    subdirectory.mkdir(parents=True)

    result = run_cli("init", "--provider", "local", "--defaults", cwd=subdirectory)

    assert result.exit_code == 0, result.stderr
    assert (scratch_repo / ".af-remote" / "local" / "bootstrap.sh").is_file()
    assert not (subdirectory / ".af-remote").exists()


def test_renders_in_the_current_directory_outside_git(
    tmp_path: Path, run_cli: RunCli
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    result = run_cli("init", "--provider", "local", "--defaults", cwd=plain)

    assert result.exit_code == 0, result.stderr
    assert (plain / ".af-remote" / "local" / "bootstrap.sh").is_file()


def test_without_a_terminal_the_defaults_are_used_and_said(
    scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli("init", "--provider", "local", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    assert "using the defaults" in result.stderr
    assert (
        read_env(scratch_repo / ".af-remote" / "local")["AF_REMOTE_SERVER_PORT"] == "0"
    )


BAD_ANSWERS = [
    pytest.param("sprites", "sandbox=Bad_Name", "sandbox", id="sandbox-not-dns"),
    pytest.param("sprites", "sandbox=-edge", "sandbox", id="sandbox-leading-hyphen"),
    pytest.param("sprites", "sandbox=edge-", "sandbox", id="sandbox-trailing-hyphen"),
    pytest.param("sprites", "sandbox=" + "a" * 64, "sandbox", id="sandbox-64-chars"),
    pytest.param("sprites", "sandbox=box\n", "sandbox", id="sandbox-trailing-newline"),
    pytest.param("sprites", "sandbox=", "sandbox", id="sandbox-empty"),
    pytest.param("local", "sandbox=a.b", "sandbox", id="local-sandbox-dot"),
    pytest.param("sprites", "server_port=0", "server_port", id="port-zero-sprites"),
    pytest.param("sprites", "server_port=65536", "server_port", id="port-too-big"),
    pytest.param("local", "server_port=-1", "server_port", id="port-negative"),
    pytest.param("sprites", "server_port=http", "server_port", id="port-not-number"),
    pytest.param("sprites", "org=acme;rm", "org", id="org-semicolon"),
    pytest.param("sprites", "opencode_version=latest", "opencode_version", id="ver"),
    pytest.param("local", "model=a b", "model", id="model-space"),
    pytest.param("sprites", "url_auth=everyone", "url_auth", id="url-auth-choice"),
    pytest.param("sprites", "source=rsync", "source", id="source-choice"),
    pytest.param("sprites", "source=clone", "source_url", id="clone-without-url"),
    pytest.param("sprites", "keepalive=maybe", "keepalive", id="keepalive-not-bool"),
    pytest.param("sprites", "forward_secrets=A-B", "forward_secrets", id="secret-name"),
    pytest.param("local", "org=acme", "org", id="question-of-other-provider"),
    pytest.param("sprites", "no_such_question=1", "no_such_question", id="unknown"),
    pytest.param("sprites", "sandbox", "KEY=VALUE", id="not-key-value"),
]


@pytest.mark.parametrize(("provider", "data", "named"), BAD_ANSWERS)
def test_bad_answer_is_a_usage_error_and_nothing_is_written(
    provider: str, data: str, named: str, scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli(
        "init", "--provider", provider, "--defaults", "--data", data, cwd=scratch_repo
    )

    assert result.exit_code == 2
    assert result.stderr.startswith("af-remote: error: ")
    assert result.stderr.count("\n") == 1, "one line, no traceback"
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (scratch_repo / ".af-remote").exists()
    assert git(scratch_repo, "status", "--porcelain") == ""


def test_unknown_provider_is_a_usage_error(scratch_repo: Path, run_cli: RunCli) -> None:
    result = run_cli("init", "--provider", "modal", "--defaults", cwd=scratch_repo)

    assert result.exit_code == 2
    assert "modal" in result.stderr
    assert not (scratch_repo / ".af-remote").exists()


def test_provider_without_a_template_is_refused(
    tmp_path: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "no-templates"
    empty.mkdir()
    monkeypatch.setattr(project, "templates_dir", lambda: empty)

    result = run_cli("init", "--provider", "sprites", "--defaults", cwd=scratch_repo)

    assert result.exit_code == 2
    assert "unknown provider 'sprites'" in result.stderr
    assert not (scratch_repo / ".af-remote").exists()


def test_existing_render_is_kept_without_force(
    scratch_repo: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("init", "--provider", "local", "--defaults", cwd=scratch_repo)[0] == 0
    )
    bootstrap = scratch_repo / ".af-remote" / "local" / "bootstrap.sh"
    edited = bootstrap.read_text() + "# my edit\n"
    bootstrap.write_text(edited)

    result = run_cli(
        "init",
        "--provider",
        "local",
        "--defaults",
        "--data",
        "sandbox=other",
        cwd=scratch_repo,
    )

    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert "--force" in result.stderr
    assert bootstrap.read_text() == edited
    env = read_env(scratch_repo / ".af-remote" / "local")
    assert env["AF_REMOTE_SANDBOX"] == "af-my-project"


def test_force_renders_again_and_keeps_the_users_secrets(
    scratch_repo: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("init", "--provider", "local", "--defaults", cwd=scratch_repo)[0] == 0
    )
    render = scratch_repo / ".af-remote" / "local"
    bootstrap = render / "bootstrap.sh"
    pristine = bootstrap.read_text()
    bootstrap.write_text(pristine + "# my edit\n")
    secrets = render / "secrets.env"
    secrets.write_text("ANTHROPIC_API_KEY=sk-test\n")

    result = run_cli(
        "init",
        "--provider",
        "local",
        "--defaults",
        "--force",
        "--data",
        "sandbox=other",
        cwd=scratch_repo,
    )

    assert result.exit_code == 0, result.stderr
    assert bootstrap.read_text() == pristine
    assert read_env(render)["AF_REMOTE_SANDBOX"] == "other"
    assert secrets.read_text() == "ANTHROPIC_API_KEY=sk-test\n"
    answers = yaml.safe_load((render / project.ANSWERS_FILE).read_text())
    assert answers["sandbox"] == "other"
    assert (render / BASE_DIR / ".env").read_text() == (render / ".env").read_text()


@pytest.mark.parametrize("provider", project.PROVIDERS)
def test_ignore_rules_keep_secrets_and_state_out_of_git(
    provider: str, scratch_repo: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("init", "--provider", provider, "--defaults", cwd=scratch_repo)[0] == 0
    )
    render = scratch_repo / ".af-remote" / provider
    (render / "secrets.env").write_text("OPENAI_API_KEY=sk-test\n")
    (render / ".state").mkdir()
    (render / ".state" / "last-run.json").write_text("{}\n")
    (render / ".env.local").write_text("AF_REMOTE_MODEL=x/y\n")

    git(scratch_repo, "add", ".")
    staged = set(git(scratch_repo, "diff", "--cached", "--name-only").split())

    prefix = f".af-remote/{provider}/"
    assert f"{prefix}secrets.env" not in staged
    assert not any(name.startswith(f"{prefix}.state/") for name in staged)
    assert f"{prefix}.env.local" not in staged
    # Everything `update` needs is committed.
    for name in ("bootstrap.sh", ".env", project.ANSWERS_FILE, f"{BASE_DIR}/.env"):
        assert prefix + name in staged


@pytest.mark.parametrize("provider", project.PROVIDERS)
def test_every_question_has_help_and_a_validator(provider: str) -> None:
    config = yaml.safe_load((project.template(provider) / "copier.yml").read_text())
    questions = {key: value for key, value in config.items() if key[0] != "_"}

    assert questions
    for key, question in questions.items():
        assert question.get("help", "").strip(), f"{key} has no help"
        checked = (
            "validator" in question
            or "choices" in question
            or question.get("type") == "bool"
        )
        assert checked, f"{key} has no validator"


class Terminal:
    """``af-remote`` in a real terminal (a tmux pane), typed at like a user would."""

    def __init__(self, socket: Path, cwd: Path, argv: list[str]) -> None:
        self.socket = socket
        self.exit_file = cwd / ".exit-code"
        command = " ".join(map(shlex.quote, [sys.executable, "-m", "af_remote", *argv]))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(GLUE), env.get("PYTHONPATH")) if part
        )
        self._tmux(
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-c",
            str(cwd),
            f"{command}; echo $? > {shlex.quote(str(self.exit_file))}; sleep 60",
            env=env,
        )

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J")

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            assert time.monotonic() < deadline, f"no {text!r} on:\n{self.screen()}"
            time.sleep(0.05)

    def answer(self, question: str, value: str | None = None) -> None:
        """Wait for ``question``; type ``value`` over the default, or accept it."""
        self.wait_for(question)
        if value is not None:
            self._tmux("send-keys", "C-u", value)
        self._tmux("send-keys", "Enter")

    def send(self, key: str) -> None:
        self._tmux("send-keys", key)

    def exit_code(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists() or not self.exit_file.read_text():
            assert time.monotonic() < deadline, f"still running:\n{self.screen()}"
            time.sleep(0.05)
        return int(self.exit_file.read_text())

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"],
            capture_output=True,
            check=False,
        )


@pytest.fixture
def terminal(
    tmp_path: Path, scratch_repo: Path
) -> Iterator[Callable[[list[str]], Terminal]]:
    require_tool("tmux")
    opened: list[Terminal] = []

    def open_terminal(argv: list[str]) -> Terminal:
        opened.append(Terminal(tmp_path / "tmux.sock", scratch_repo, argv))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def test_questions_are_asked_on_a_terminal(
    terminal: Callable[[list[str]], Terminal], scratch_repo: Path
) -> None:
    term = terminal(["init", "--provider", "local", "--data", "model=x/y"])

    term.answer("Name of the local sandbox", "Bad_Name")
    term.wait_for("must be a DNS label")
    term.answer("Name of the local sandbox", "box-1")
    term.answer("OpenCode version")
    term.answer("Port of the OpenCode server", "4321")
    term.answer("Names (not values) of environment variables")

    assert term.exit_code() == 0, term.screen()
    screen = term.screen()
    assert "Model for the agent" not in screen, "answered by --data, not asked"
    env = read_env(scratch_repo / ".af-remote" / "local")
    assert env["AF_REMOTE_SANDBOX"] == "box-1"
    assert env["AF_REMOTE_SERVER_PORT"] == "4321"
    assert env["AF_REMOTE_MODEL"] == "x/y"


def test_ctrl_c_at_a_question_stops_cleanly_and_writes_nothing(
    terminal: Callable[[list[str]], Terminal], scratch_repo: Path
) -> None:
    term = terminal(["init", "--provider", "sprites"])

    term.wait_for("Name of the sprite")
    term.send("C-c")

    assert term.exit_code() == 130
    assert "af-remote: error: interrupted" in term.screen()
    assert "Traceback" not in term.screen()
    assert not (scratch_repo / ".af-remote").exists()
