"""The user's project: its root, its renders and the shipped templates."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from af_remote.errors import UsageError

RENDER_DIR = ".af-remote"
ANSWERS_FILE = ".copier-answers.yml"
PROVIDERS = ("sprites", "local")


def templates_dir() -> Path:
    """The templates, inside the installed package or beside ``glue/`` in a checkout."""
    packaged = Path(__file__).resolve().parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


def template(provider: str) -> Path:
    path = templates_dir() / provider
    if provider not in PROVIDERS or not (path / "copier.yml").is_file():
        raise UsageError(
            f"unknown provider {provider!r}",
            hint=f"choose one of {', '.join(PROVIDERS)}",
        )
    return path


def root(start: Path | None = None) -> Path:
    """The git root when inside a repository, else the current directory."""
    start = start or Path.cwd()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=start,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return start.resolve()
    if top.returncode == 0 and top.stdout.strip():
        return Path(top.stdout.strip())
    return start.resolve()


def render_dir(project_root: Path, provider: str) -> Path:
    return project_root / RENDER_DIR / provider


def rendered_providers(project_root: Path) -> list[str]:
    return [
        provider
        for provider in PROVIDERS
        if (render_dir(project_root, provider) / ANSWERS_FILE).is_file()
    ]


def pick_provider(project_root: Path, provider: str | None) -> str:
    """The provider named, or the only one rendered in this project."""
    if provider:
        if not (render_dir(project_root, provider) / ANSWERS_FILE).is_file():
            raise UsageError(
                f"no {provider} render in {project_root}",
                hint=f"run `af-remote init --provider {provider}` first",
            )
        return provider
    found = rendered_providers(project_root)
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(
            f"no render in {project_root}",
            hint="run `af-remote init --provider local` or `--provider sprites` first",
        )
    raise UsageError(
        f"this project has renders for {', '.join(found)}",
        hint="choose one with --provider",
    )


def slug(name: str, *, max_length: int = 58) -> str:
    """``name`` as a DNS label: lowercase letters, digits and single hyphens."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    label = label[:max_length].rstrip("-")
    return label or "project"
