"""af-remote as a user installs it: a wheel in a fresh virtual environment, with the
templates inside the package, rendering and updating a project away from the checkout.

Building and installing takes some 20 s (the dependencies come from the package
index, through pip's cache), so the wheel is built and installed once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import CHECKOUT, GLUE, git

# pip runs as the user would run it (their HOME, their pip configuration and cache),
# captured before the fixtures isolate each test from them.
_USER_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

SET_LINE = "readonly MARK='::af-remote::'\n"
TEMPLATE_SET_LINE = "readonly MARK='::af-remote::' # the protocol's marker\n"
USER_TAIL = "\n# my own closing step\necho 'bootstrap finished' >&2\n"


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def isolated_env() -> dict[str, str]:
    """The test's isolated environment, without the checkout on the import path."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        [*pip, "wheel", "--no-deps", "--quiet", "-w", str(out), str(CHECKOUT)],
        cwd=out,
        env=_USER_ENV,
    )
    (built,) = out.glob("af_remote-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "af-remote"
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent, env=_USER_ENV)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--quiet", str(wheel)], cwd=venv.parent, env=_USER_ENV)
    return venv


def installed_templates(venv: Path) -> Path:
    code = "from af_remote import project; print(project.templates_dir())"
    out = run([str(venv / "bin" / "python"), "-c", code], cwd=venv, env=isolated_env())
    return Path(out.strip())


def test_wheel_ships_every_template_file(wheel: Path) -> None:
    shipped = set(zipfile.ZipFile(wheel).namelist())
    templates = CHECKOUT / "templates"
    expected = {
        "af_remote/templates/" + path.relative_to(templates).as_posix()
        for path in templates.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }

    assert expected
    assert expected <= shipped
    assert "af_remote/cli.py" in shipped


def test_checkout_finds_the_templates_beside_glue(tmp_path: Path) -> None:
    code = "from af_remote import project; print(project.templates_dir())"
    env = isolated_env() | {"PYTHONPATH": str(GLUE)}
    out = run([sys.executable, "-c", code], cwd=tmp_path, env=env)

    assert Path(out.strip()) == CHECKOUT / "templates"


def test_installed_package_finds_its_own_templates(venv: Path) -> None:
    templates = installed_templates(venv)

    assert templates.is_relative_to(venv)
    assert not templates.is_relative_to(CHECKOUT)
    assert (templates / "sprites" / "copier.yml").is_file()
    help_text = run([str(venv / "bin" / "af-remote"), "--help"], cwd=venv)
    assert "init" in help_text


def test_installed_init_and_update_merge_in_a_project(
    venv: Path, scratch_repo: Path
) -> None:
    af_remote = str(venv / "bin" / "af-remote")
    env = isolated_env()
    templates = installed_templates(venv) / "sprites"
    render = scratch_repo / ".af-remote" / "sprites"

    run(
        [af_remote, "init", "--provider", "sprites", "--defaults"],
        cwd=scratch_repo,
        env=env,
    )
    for script in templates.glob("*.sh"):
        assert (render / script.name).read_bytes() == script.read_bytes()
    git(scratch_repo, "add", "--all")
    git(scratch_repo, "commit", "--quiet", "-m", "Add af-remote sprites")

    # A hand edit and no template change: nothing to merge, the edit stays.
    bootstrap = render / "bootstrap.sh"
    edited = bootstrap.read_text() + USER_TAIL
    bootstrap.write_text(edited)
    git(scratch_repo, "commit", "--quiet", "--all", "-m", "My step")
    out = run([af_remote, "update"], cwd=scratch_repo, env=env)
    assert "up to date" in out
    assert bootstrap.read_text() == edited

    # A new release of the installed template: merged with the hand edit.
    installed_bootstrap = templates / "bootstrap.sh"
    original = installed_bootstrap.read_text()
    try:
        assert original.count(SET_LINE) == 1
        installed_bootstrap.write_text(original.replace(SET_LINE, TEMPLATE_SET_LINE))
        out = run([af_remote, "update"], cwd=scratch_repo, env=env)
    finally:
        installed_bootstrap.write_text(original)

    merged = bootstrap.read_text()
    assert "bootstrap.sh" in out
    assert merged.endswith(USER_TAIL)
    assert TEMPLATE_SET_LINE in merged
    assert SET_LINE not in merged
