"""Shared pieces of the end-to-end tests: a project rendered for a provider whose
OpenCode talks to the fake model, af-remote run as a real process, and readers for
what it leaves behind (records, sessions, replies).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from af_remote import config
from af_remote.opencode import Server
from conftest import GLUE, git, require_tool
from opencode_support import UNREACHABLE_NPM_REGISTRY, fake_provider_config

# A forwarded secret the tests set; it must never show up outside the secret files.
FAKE_API_KEY = "sk-test-af-remote-0123456789abcdef"

OFFLINE_SERVER_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    # OpenCode npm-installs a plugin package at run time; offline tests keep it
    # from reaching the registry (it then fails quietly).
    "npm_config_registry": UNREACHABLE_NPM_REGISTRY,
}


# Resolved at import, before the tests point HOME elsewhere.
_CACHED_PREFIX = Path(
    os.environ.get("AF_REMOTE_TEST_OPENCODE_PREFIX")
    or os.path.expanduser("~/.cache/af-remote-test/opencode-1.18.33")
)


def opencode_prefix() -> Path:
    """An OpenCode install as ``PREFIX/bin/opencode`` (bin/run-tests makes it)."""
    require_tool("node")
    if not (_CACHED_PREFIX / "bin" / "opencode").is_file():
        message = (
            f"OpenCode is not installed at {_CACHED_PREFIX}; bin/run-tests installs it"
        )
        if os.environ.get("AF_REMOTE_TEST_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return _CACHED_PREFIX


@dataclass
class Project:
    root: Path
    provider: str

    @property
    def render(self) -> Path:
        return self.root / ".af-remote" / self.provider


def make_project(
    tmp_path: Path,
    provider: str,
    llm_base_url: str,
    *,
    data: dict[str, str] | None = None,
    env_lines: dict[str, str] | None = None,
) -> Project:
    """A git project with ``provider`` rendered and pointed at the fake model."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / "README.md").write_text("# A project\n\nThe agent works here.\n")
    git(root, "add", "README.md")
    git(root, "commit", "--quiet", "-m", "First commit")
    answers = ["--data", "forward_secrets=ANTHROPIC_API_KEY"]
    for key, value in (data or {}).items():
        answers += ["--data", f"{key}={value}"]
    done = af(root, "init", "--provider", provider, "--defaults", *answers)
    assert done.returncode == 0, done.stderr
    render = root / ".af-remote" / provider
    (render / "opencode.json").write_text(
        json.dumps(
            {
                **fake_provider_config(llm_base_url),
                "$schema": "https://opencode.ai/config.json",
            },
            indent=2,
        )
    )
    (render / "server.env").write_text(
        "".join(f"{key}={value}\n" for key, value in OFFLINE_SERVER_ENV.items())
    )
    if env_lines:
        with (render / ".env").open("a") as handle:
            for key, value in env_lines.items():
                handle.write(f"{key}='{value}'\n")
    git(root, "add", ".af-remote")
    git(root, "commit", "--quiet", "-m", "Render af-remote")
    return Project(root, provider)


def af(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """af-remote as a real process (``python -m af_remote``) in ``cwd``."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(GLUE),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "af_remote", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def af_json(cwd: Path, *args: str, **kwargs: Any) -> Any:
    result = af(cwd, *args, "--json", **kwargs)
    assert result.returncode == 0, f"af-remote {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


def registry_dir() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "aetherflow" / "sessions"


def registry(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((registry_dir() / name).read_text())
    return document


def spawn_record(spawn_id: str) -> dict[str, Any]:
    for record in registry("remote_spawns.json")["records"]:
        if record["spawn_id"] == spawn_id:
            return dict(record)
    raise AssertionError(f"no record of {spawn_id}")


def password(provider: str, sandbox: str, org: str | None = None) -> str:
    return config.password_path(provider, org, sandbox).read_text().strip()


def reply_text(
    base_url: str, secret: str, session_id: str, workdir: str, timeout: float = 90
) -> str:
    """The session's assistant text once it is idle with a finished reply."""
    deadline = time.monotonic() + timeout
    with Server(base_url, secret) as server:
        while True:
            messages = server.messages(session_id, workdir)
            statuses = server.session_status(workdir)
            done = [
                message
                for message in messages
                if message.get("info", {}).get("role") == "assistant"
                and message.get("info", {}).get("time", {}).get("completed")
            ]
            if done and session_id not in statuses:
                return "".join(
                    part.get("text", "")
                    for part in done[-1].get("parts", [])
                    if part.get("type") == "text"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no finished reply in {session_id} after {timeout}s: "
                    f"{json.dumps(messages)[:2000]}"
                )
            time.sleep(0.2)


def files_under(root: Path) -> list[Path]:
    return [
        path for path in root.rglob("*") if path.is_file() and ".git" not in path.parts
    ]


def assert_no_secret(secrets: list[str], *texts: str, where: str = "") -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret leaked {where}"
