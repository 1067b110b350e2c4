"""Where af-remote and Aetherflow keep things on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_home() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config")


def data_home() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share")


def registry_dir() -> Path:
    """Aetherflow's session registry: ``sessions.json`` and ``remote_spawns.json``."""
    return config_home() / "aetherflow" / "sessions"


def af_remote_config_dir() -> Path:
    """af-remote's own local secrets (server passwords), mode 0700."""
    return config_home() / "af-remote"


def local_sandboxes_dir() -> Path:
    """Sandboxes of the ``local`` provider."""
    return data_home() / "af-remote" / "local"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
