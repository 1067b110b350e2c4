"""The command line: help, usage errors, and how failures reach the user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from af_remote import __version__, cli, listing, redact, ui
from af_remote.errors import (
    AfRemoteError,
    NativeCommandError,
    NotReadyError,
    RegistryError,
    UsageError,
)
from conftest import GLUE, RunCli

# Each command's flags, as documented in docs/.
FLAGS = {
    "init": ["--provider", "--defaults", "--data", "--force"],
    "update": ["--provider"],
    "up": [
        "--provider",
        "--prompt",
        "--prompt-file",
        "--title",
        "--name",
        "--request-id",
        "--dry-run",
        "--json",
    ],
    "ls": ["--all", "--json"],
    "status": ["--provider", "--json"],
    "attach": ["--provider"],
    "down": ["--provider", "--destroy"],
}


@pytest.fixture
def failing_ls(monkeypatch: pytest.MonkeyPatch) -> Callable[[BaseException], None]:
    """Make `af-remote ls` raise ``error`` from inside the command."""

    def install(error: BaseException) -> None:
        def ls(*, show_all: bool, as_json: bool) -> int:
            raise error

        monkeypatch.setattr(listing, "ls", ls)

    return install


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_help_of_each_command_names_its_flags(
    run_cli: RunCli, tmp_path: Path, command: str
) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"usage: af-remote {command} ")
    for flag in [*FLAGS[command], "--verbose", "--quiet"]:
        assert re.search(rf"(?<![\w-]){flag}(?![\w-])", result.stdout), flag


def test_top_level_help_lists_every_command(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.exit_code == 0
    for command in FLAGS:
        assert f"\n    {command} " in result.stdout, command
    assert "exit codes:" in result.stdout


def test_no_command_prints_help(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.exit_code == 0
    assert result.stdout.startswith("usage: af-remote ")


def test_version(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert (result.exit_code, result.stdout) == (0, f"{__version__}\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["launch"],
        ["ls", "--everything"],
        ["up", "--prompt", "a", "--prompt-file", "b"],
        ["init"],  # --provider is required
        ["init", "--provider", "modal"],
    ],
)
def test_usage_errors_exit_2(run_cli: RunCli, tmp_path: Path, argv: list[str]) -> None:
    result = run_cli(*argv, cwd=tmp_path)
    assert result.exit_code == 2
    assert "usage: af-remote" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AfRemoteError("the sandbox is gone", hint="run up again"), 1),
        (UsageError("the sandbox is gone", hint="run up again"), 2),
        (NotReadyError("the sandbox is gone", hint="run up again"), 3),
        (RegistryError("the sandbox is gone", hint="run up again"), 1),
        (
            NativeCommandError(
                "the sandbox is gone",
                argv=["sprite", "list"],
                exit_code=7,
                hint="run up again",
            ),
            1,
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_an_error_is_one_line_on_stderr_and_its_exit_code(
    run_cli: RunCli,
    tmp_path: Path,
    failing_ls: Callable[[BaseException], None],
    error: AfRemoteError,
    code: int,
) -> None:
    failing_ls(error)
    result = run_cli("ls", cwd=tmp_path)
    assert result.exit_code == code
    assert result.stderr == "af-remote: error: the sandbox is gone (run up again)\n"
    assert result.stdout == ""


@pytest.mark.parametrize("position", ["before", "after"])
def test_verbose_adds_the_traceback(
    run_cli: RunCli,
    tmp_path: Path,
    failing_ls: Callable[[BaseException], None],
    position: str,
) -> None:
    failing_ls(UsageError("no such spawn"))
    argv = ["-v", "ls"] if position == "before" else ["ls", "-v"]
    result = run_cli(*argv, cwd=tmp_path)
    assert result.exit_code == 2
    assert "Traceback (most recent call last):" in result.stderr
    assert "af_remote.errors.UsageError: no such spawn" in result.stderr
    assert result.stderr.endswith("af-remote: error: no such spawn\n")


def test_ctrl_c_exits_130(
    run_cli: RunCli, tmp_path: Path, failing_ls: Callable[[BaseException], None]
) -> None:
    failing_ls(KeyboardInterrupt())
    result = run_cli("ls", cwd=tmp_path)
    assert (result.exit_code, result.stderr) == (130, "af-remote: error: interrupted\n")


def test_an_unexpected_exception_is_one_line_and_exit_1(
    run_cli: RunCli, tmp_path: Path, failing_ls: Callable[[BaseException], None]
) -> None:
    failing_ls(ValueError("bad thing"))
    result = run_cli("ls", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (
        "af-remote: error: unexpected ValueError: bad thing (run with -v for details)\n"
    )
    verbose = run_cli("ls", "-v", cwd=tmp_path)
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last):" in verbose.stderr
    assert "raise error\nValueError: bad thing" in verbose.stderr


def test_errors_and_tracebacks_never_show_a_registered_secret(
    run_cli: RunCli, tmp_path: Path, failing_ls: Callable[[BaseException], None]
) -> None:
    secret = "sk-ant-0123456789abcdef"
    redact.add_secret(secret)
    failing_ls(AfRemoteError(f"the server refused key {secret}"))
    for argv in (["ls"], ["ls", "-v"]):
        result = run_cli(*argv, cwd=tmp_path)
        assert result.exit_code == 1
        assert secret not in result.stderr
        assert f"refused key {redact.MASK}" in result.stderr


def test_quiet_hides_warnings_but_not_errors(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ls(*, show_all: bool, as_json: bool) -> int:
        ui.warn("the registry is old")
        ui.out("result line")
        return 0

    monkeypatch.setattr(listing, "ls", ls)
    loud = run_cli("ls", cwd=tmp_path)
    assert loud.stderr == "af-remote: warning: the registry is old\n"
    quiet = run_cli("ls", "-q", cwd=tmp_path)
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "result line\n", "")


def test_main_exits_with_the_command_s_code(
    failing_ls: Callable[[BaseException], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    failing_ls(NotReadyError("still spawning"))
    with pytest.raises(SystemExit) as caught:
        cli.main(["ls"])
    assert caught.value.code == 3


def test_help_and_ls_do_not_import_the_heavy_libraries(tmp_path: Path) -> None:
    heavy = ("copier", "httpx", "plumbum", "dotenv")
    code = (
        "import sys\n"
        "from af_remote import cli\n"
        "assert cli.run(['ls']) == 0\n"
        "try:\n"
        "    cli.run(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(GLUE)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
