"""Against the real Sprites service: the whole day, on a sprite made for the test.

Skipped unless AF_REMOTE_LIVE_SPRITES=1 is set and a logged-in `sprite` CLI is on
PATH (`sprite login`, or `sprite auth setup --token ...`). It costs a sprite for a
few minutes and destroys it at the end, whatever happens. The agent's model key
comes from the environment (ANTHROPIC_API_KEY and friends, forwarded as secrets).

    AF_REMOTE_LIVE_SPRITES=1 bin/run-tests -m live
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import GLUE, git

pytestmark = pytest.mark.live


def _live_cli() -> str:
    if os.environ.get("AF_REMOTE_LIVE_SPRITES") != "1":
        pytest.skip("live Sprites tests run only with AF_REMOTE_LIVE_SPRITES=1")
    sprite = shutil.which("sprite")
    if sprite is None or "standin" in sprite:
        pytest.skip("the real sprite CLI is not on PATH")
    listing = subprocess.run(
        [sprite, "list"], capture_output=True, text=True, check=False, timeout=60
    )
    if listing.returncode != 0:
        pytest.skip(f"sprite CLI not usable: {listing.stderr.strip()[-200:]}")
    return sprite


def _af(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "af_remote", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(GLUE)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture
def live_project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    sprite = _live_cli()
    name = f"af-live-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / "README.md").write_text("# Live test\n")
    git(root, "add", "README.md")
    git(root, "commit", "--quiet", "-m", "Live test")
    done = _af(
        root, "init", "--provider", "sprites", "--defaults", "--data", f"sandbox={name}"
    )
    assert done.returncode == 0, done.stderr
    git(root, "add", ".af-remote")
    git(root, "commit", "--quiet", "-m", "Render")
    try:
        yield root, name
    finally:
        subprocess.run(
            [sprite, "destroy", "--force", name], capture_output=True, check=False
        )


def test_live_up_status_down(live_project: tuple[Path, str]) -> None:
    root, name = live_project

    up = _af(root, "up", "--prompt", "Reply with the word ready.", "--json")
    assert up.returncode == 0, up.stderr
    spawn = json.loads(up.stdout)
    assert spawn["state"] == "running" and spawn["session_id"].startswith("ses_")
    assert spawn["provider_calls"] <= 2

    status = _af(root, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["server"]["healthy"] is True

    again = _af(root, "up", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["provider_calls"] == 1

    down = _af(root, "down", "--destroy")
    assert down.returncode == 0, down.stderr
    assert name in down.stdout
