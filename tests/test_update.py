"""`af-remote update`: template changes merged three ways with the user's hand edits.

Each test works on a copy of the shipped templates in ``tmp_path`` and changes that
copy the way a new af-remote release would.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from af_remote import project
from af_remote.render import BASE_DIR
from conftest import RunCli, git

# A line every bootstrap.sh has (the protocol's marker), so the tests do not depend
# on what the scripts do.
SET_LINE = "readonly MARK='::af-remote::'\n"
TEMPLATE_SET_LINE = "readonly MARK='::af-remote::' # the protocol's marker\n"
USER_SET_LINE = "readonly MARK='::af-remote::' # mine\n"
SERVE_LINE = "set -euo pipefail\n"  # serve.sh's
SERVE_CHANGED = "set -Eeuo pipefail\n"
USER_TAIL = "\n# my own closing step\necho 'bootstrap finished' >&2\n"
MARKERS = ("<<<<<<< yours", "=======", ">>>>>>> new template")


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the templates that af-remote uses instead of the shipped."""
    copy = tmp_path / "templates"
    shutil.copytree(project.templates_dir(), copy)
    monkeypatch.setattr(project, "templates_dir", lambda: copy)
    return copy


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)


@pytest.fixture
def rendered(scratch_repo: Path, templates: Path, run_cli: RunCli) -> Path:
    """The local render in ``scratch_repo``, committed."""
    result = run_cli("init", "--provider", "local", "--defaults", cwd=scratch_repo)
    assert result.exit_code == 0, result.stderr
    commit_all(scratch_repo, "Add af-remote local")
    return scratch_repo / ".af-remote" / "local"


def test_hand_edit_and_template_change_are_both_kept(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    bootstrap = rendered / "bootstrap.sh"
    bootstrap.write_text(bootstrap.read_text() + USER_TAIL)
    commit_all(scratch_repo, "My step")
    replace_once(templates / "local" / "bootstrap.sh", SET_LINE, TEMPLATE_SET_LINE)

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    merged = bootstrap.read_text()
    assert merged.endswith(USER_TAIL)
    assert TEMPLATE_SET_LINE in merged
    assert SET_LINE not in merged
    assert not any(marker in merged for marker in MARKERS)
    assert "updated" in result.stdout
    assert ".af-remote/local/bootstrap.sh" in result.stdout
    assert subprocess.run(["bash", "-n", str(bootstrap)], check=False).returncode == 0
    # The new render is the base of the next update.
    base = rendered / BASE_DIR / "bootstrap.sh"
    assert base.read_text() == (templates / "local" / "bootstrap.sh").read_text()


def test_edit_of_the_lines_the_template_changed_is_a_conflict(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    bootstrap = rendered / "bootstrap.sh"
    replace_once(bootstrap, SET_LINE, USER_SET_LINE)
    commit_all(scratch_repo, "Trace every command")
    replace_once(templates / "local" / "bootstrap.sh", SET_LINE, TEMPLATE_SET_LINE)
    # An unrelated template change elsewhere still arrives.
    replace_once(
        templates / "local" / "serve.sh",
        SERVE_LINE,
        SERVE_LINE + "shopt -s nullglob\n",
    )

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 1
    assert "CONFLICT" in result.stdout
    assert ".af-remote/local/bootstrap.sh" in result.stdout
    assert "conflicts" in result.stderr
    assert "bootstrap.sh" in result.stderr
    merged = bootstrap.read_text()
    for marker in MARKERS:
        assert marker in merged
    assert USER_SET_LINE in merged
    assert TEMPLATE_SET_LINE in merged
    assert "shopt -s nullglob\n" in (rendered / "serve.sh").read_text()


def test_resolved_conflict_does_not_come_back(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    bootstrap = rendered / "bootstrap.sh"
    replace_once(bootstrap, SET_LINE, USER_SET_LINE)
    commit_all(scratch_repo, "Trace every command")
    replace_once(templates / "local" / "bootstrap.sh", SET_LINE, TEMPLATE_SET_LINE)
    assert run_cli("update", cwd=scratch_repo).exit_code == 1

    resolution = (rendered / BASE_DIR / "bootstrap.sh").read_text()
    resolution = resolution.replace(TEMPLATE_SET_LINE, "set -Eeuxo pipefail\n")
    bootstrap.write_text(resolution)
    commit_all(scratch_repo, "Resolve")
    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stdout
    assert bootstrap.read_text() == resolution


def test_untouched_files_follow_the_template(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    template = templates / "local"
    replace_once(template / "serve.sh", SERVE_LINE, SERVE_CHANGED)
    (template / "notes.md").write_text("New in this release.\n")
    (template / "opencode.json").unlink()

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    assert (rendered / "serve.sh").read_text() == (template / "serve.sh").read_text()
    assert (rendered / "notes.md").read_text() == "New in this release.\n"
    assert not (rendered / "opencode.json").exists()
    assert "added" in result.stdout
    assert "removed" in result.stdout


def test_nothing_the_user_changed_is_dropped(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    """Files the user edited or deleted stay so, and the report says so."""
    template = templates / "local"
    (rendered / "opencode.json").write_text('{"model": "mine/model"}\n')
    (rendered / "README.md").unlink()
    commit_all(scratch_repo, "My config, no README")
    (template / "opencode.json").unlink()
    (template / "README.md.jinja").write_text("# rewritten\n")

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    assert (rendered / "opencode.json").read_text() == '{"model": "mine/model"}\n'
    assert not (rendered / "README.md").exists()
    kept = [line for line in result.stdout.splitlines() if "kept (yours)" in line]
    assert any(line.endswith("opencode.json") for line in kept)
    assert any(line.endswith("README.md") for line in kept)


def test_new_question_gets_its_default_and_is_recorded(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    template = templates / "local"
    with (template / "copier.yml").open("a") as config:
        config.write(
            "\nlog_level:\n  type: str\n  help: How much the server logs.\n"
            "  choices: [INFO, DEBUG]\n  default: INFO\n"
        )
    with (template / ".env.jinja").open("a") as env:
        env.write("\n# Server log level.\nAF_REMOTE_LOG_LEVEL='{{ log_level }}'\n")
    sandbox_before = yaml.safe_load((rendered / project.ANSWERS_FILE).read_text())

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    env = (rendered / ".env").read_text()
    assert "AF_REMOTE_LOG_LEVEL='INFO'\n" in env
    answers = yaml.safe_load((rendered / project.ANSWERS_FILE).read_text())
    assert answers["log_level"] == "INFO"
    assert answers["sandbox"] == sandbox_before["sandbox"]


def test_answers_given_at_init_are_reused(
    scratch_repo: Path, templates: Path, run_cli: RunCli
) -> None:
    result = run_cli(
        "init",
        "--provider",
        "sprites",
        "--defaults",
        "--data",
        "sandbox=team-box",
        "--data",
        "keepalive=off",
        cwd=scratch_repo,
    )
    assert result.exit_code == 0, result.stderr
    commit_all(scratch_repo, "Add af-remote sprites")
    replace_once(
        templates / "sprites" / ".env.jinja",
        "# Sprites organization",
        "# The Sprites organization",
    )

    result = run_cli("update", "--provider", "sprites", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    env = (scratch_repo / ".af-remote" / "sprites" / ".env").read_text()
    assert "# The Sprites organization" in env
    assert "AF_REMOTE_SANDBOX='team-box'\n" in env
    assert "AF_REMOTE_KEEPALIVE='off'\n" in env


def test_clone_url_given_for_later_survives_an_update(
    scratch_repo: Path, templates: Path, run_cli: RunCli
) -> None:
    """A source_url given while source is still bundle is an answer like any other."""
    result = run_cli(
        "init",
        "--provider",
        "sprites",
        "--defaults",
        "--data",
        "source_url=https://git.example.com/acme/app.git",
        cwd=scratch_repo,
    )
    assert result.exit_code == 0, result.stderr
    commit_all(scratch_repo, "Add af-remote sprites")
    replace_once(
        templates / "sprites" / ".env.jinja",
        "# Repository the sprite clones",
        "# The repository the sprite clones",
    )

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    env = (scratch_repo / ".af-remote" / "sprites" / ".env").read_text()
    assert "# The repository the sprite clones" in env
    assert "AF_REMOTE_SOURCE_URL='https://git.example.com/acme/app.git'\n" in env


def test_refuses_outside_git(tmp_path: Path, templates: Path, run_cli: RunCli) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert run_cli("init", "--provider", "local", "--defaults", cwd=plain)[0] == 0
    replace_once(templates / "local" / "serve.sh", SERVE_LINE, SERVE_CHANGED)
    before = (plain / ".af-remote" / "local" / "serve.sh").read_text()

    result = run_cli("update", cwd=plain)

    assert result.exit_code == 1
    assert "not a git repository" in result.stderr
    assert "git init" in result.stderr
    assert (plain / ".af-remote" / "local" / "serve.sh").read_text() == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("never-committed", id="never-committed"),
        pytest.param("modified", id="modified"),
        pytest.param("untracked", id="untracked-file"),
    ],
)
def test_refuses_with_an_uncommitted_render(
    change: str,
    scratch_repo: Path,
    templates: Path,
    run_cli: RunCli,
) -> None:
    assert (
        run_cli("init", "--provider", "local", "--defaults", cwd=scratch_repo)[0] == 0
    )
    render = scratch_repo / ".af-remote" / "local"
    if change != "never-committed":
        commit_all(scratch_repo, "Add af-remote local")
    if change == "modified":
        with (render / "bootstrap.sh").open("a") as script:
            script.write("# work in progress\n")
    if change == "untracked":
        (render / "extra.sh").write_text("#!/bin/sh\n")
    replace_once(templates / "local" / "bootstrap.sh", SET_LINE, TEMPLATE_SET_LINE)
    before = (render / "bootstrap.sh").read_text()

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 1
    assert "not committed" in result.stderr
    assert "git add .af-remote/local" in result.stderr
    assert (render / "bootstrap.sh").read_text() == before


def test_secrets_file_does_not_block_an_update(
    rendered: Path, templates: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    (rendered / "secrets.env").write_text("ANTHROPIC_API_KEY=sk-test\n")
    replace_once(templates / "local" / "serve.sh", SERVE_LINE, SERVE_CHANGED)

    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    assert (rendered / "secrets.env").read_text() == "ANTHROPIC_API_KEY=sk-test\n"


def test_without_a_render_says_how_to_make_one(
    scratch_repo: Path, run_cli: RunCli
) -> None:
    result = run_cli("update", cwd=scratch_repo)

    assert result.exit_code == 2
    assert "no render" in result.stderr
    assert "af-remote init" in result.stderr


def test_two_renders_need_a_provider(
    scratch_repo: Path, templates: Path, run_cli: RunCli
) -> None:
    for provider in project.PROVIDERS:
        result = run_cli("init", "--provider", provider, "--defaults", cwd=scratch_repo)
        assert result.exit_code == 0, result.stderr
    commit_all(scratch_repo, "Both renders")

    ambiguous = run_cli("update", cwd=scratch_repo)
    chosen = run_cli("update", "--provider", "local", cwd=scratch_repo)

    assert ambiguous.exit_code == 2
    assert "--provider" in ambiguous.stderr
    assert chosen.exit_code == 0, chosen.stderr
    assert "up to date" in chosen.stdout
