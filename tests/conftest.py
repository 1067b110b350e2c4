"""Shared test fixtures: an isolated user environment, the CLI run in-process, a
scratch git project, a render of it, and the fake model.

Every test gets its own HOME and XDG directories and a git identity of its own, so
that nothing reads or writes the real user's config, registry or sandboxes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from af_remote import cli, redact
from fakellm import FakeLLM, echo_last_user_message

TESTS = Path(__file__).resolve().parent
CHECKOUT = TESTS.parent
GLUE = CHECKOUT / "glue"

# Variables that would make a test depend on the machine it runs on: af-remote's own
# settings (AF_REMOTE_<KEY> overrides .env) and git's view of the repository and its
# configuration. The test harness's own variables stay.
_LEAKY_PREFIXES = ("AF_REMOTE_", "GIT_")
_KEPT = ("AF_REMOTE_TEST_", "AF_REMOTE_VENV")


class CliResult(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


RunCli = Callable[..., CliResult]

# The keys of one spawn in `--json` output (docs/json.md).
SPAWN_KEYS = {
    "spawn_id",
    "provider",
    "sandbox",
    "org",
    "state",
    "session_id",
    "server_ref",
    "server_port",
    "workdir",
    "branch",
    "title",
    "project",
    "request_id",
    "last_error",
    "created_at",
    "updated_at",
}
# Model API keys that a developer's shell may hold; forwarded when set.
MODEL_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY")


def require_tool(name: str) -> str:
    """The path of ``name``; skips the test when it is missing.

    With ``AF_REMOTE_TEST_REQUIRE_ALL=1`` (as in CI) a missing tool fails the test
    instead, so that nothing is silently left untested.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed"
    if os.environ.get("AF_REMOTE_TEST_REQUIRE_ALL") == "1":
        pytest.fail(f"{message} (AF_REMOTE_TEST_REQUIRE_ALL=1)")
    pytest.skip(message)


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stdout; a failure fails the test."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(autouse=True)
def isolated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES) and not name.startswith(_KEPT):
            monkeypatch.delenv(name)

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable, relative in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(variable, str(home / relative))

    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = af-remote tests\n\temail = tests@af-remote.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
        "[commit]\n\tgpgsign = false\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # A test directory that is not a repository must not be taken for part of one
    # that happens to enclose the temporary directory.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    yield home

    redact.clear()


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> RunCli:
    """Run ``af-remote ARGV...`` in-process in ``cwd``: (exit code, stdout, stderr)."""

    def run(*argv: str, cwd: Path) -> CliResult:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = cli.run(list(argv))
        except SystemExit as exit_:  # argparse's own usage errors and --help
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Path:
    """A git repository with one commit, in a folder named like a user's project."""
    repo = tmp_path / "my-project"
    repo.mkdir()
    git(repo, "init", "--quiet")
    (repo / "README.md").write_text("# my project\n", encoding="utf-8")
    git(repo, "add", "README.md")
    git(repo, "commit", "--quiet", "-m", "Start")
    return repo


@pytest.fixture(scope="module")
def pristine_renders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Renders made once per module by `af-remote init`, copied into each test."""
    return tmp_path_factory.mktemp("renders")


def cached_render(run_cli: RunCli, repo: Path, provider: str, renders: Path) -> Path:
    """``repo`` rendered for ``provider`` with the defaults; the first render is
    kept under ``renders`` and copied for the later ones (copier is slow)."""
    target = repo / ".af-remote" / provider
    cached = renders / provider
    if cached.is_dir():
        shutil.copytree(cached, target)
        return target
    result = run_cli("init", "--provider", provider, "--defaults", cwd=repo)
    assert result.exit_code == 0, result.stderr
    shutil.copytree(target, cached)
    return target


@pytest.fixture
def sprites_render(run_cli: RunCli, scratch_repo: Path, pristine_renders: Path) -> Path:
    return cached_render(run_cli, scratch_repo, "sprites", pristine_renders)


@pytest.fixture
def no_model_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own API keys must not leak into the secrets under test."""
    for name in MODEL_KEYS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    """The fake model, echoing the last user message back."""
    with FakeLLM(reply=echo_last_user_message) as server:
        yield server
