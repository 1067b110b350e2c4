"""`af-remote --help` and `ls` start without the heavy libraries.

copier, httpx and plumbum (and yaml, dotenv behind them) cost a few hundred
milliseconds to import; only the commands that use them may pay for that.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GLUE

HEAVY = ("copier", "httpx", "plumbum", "yaml", "dotenv")


def imported_modules(argv: list[str], cwd: Path) -> tuple[set[str], str]:
    """Modules a fresh ``python -X importtime ARGV...`` imports, and its stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(GLUE), env.get("PYTHONPATH")) if part
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return modules, result.stdout


def heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def test_the_check_sees_a_heavy_import(tmp_path: Path) -> None:
    modules, _ = imported_modules(["-c", "import yaml"], tmp_path)

    assert "yaml" in heavy(modules)


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    modules, out = imported_modules(["-m", "af_remote", "--help"], tmp_path)

    assert "af_remote.cli" in modules
    assert heavy(modules) == []
    for command in ("init", "update", "up", "ls", "status", "attach", "down"):
        assert f"\n    {command} " in out, f"--help does not list {command}"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["ls"], id="ls"),
        pytest.param(["ls", "--all", "--json"], id="ls-all-json"),
    ],
)
def test_ls_imports_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    if importlib.util.find_spec("af_remote.listing") is None:
        pytest.skip("af_remote.listing does not exist yet")

    modules, _ = imported_modules(["-m", "af_remote", *argv], tmp_path)

    assert "af_remote.listing" in modules
    assert heavy(modules) == []
