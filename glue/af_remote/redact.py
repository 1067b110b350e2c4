"""Keep secret values out of everything that leaves the process.

Code that reads a secret registers it with :func:`add_secret`; every path that prints,
logs or records text passes it through :func:`redact` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MASK = "[redacted]"
# Credentials a provider CLI reads from the environment: af-remote never uses them,
# but a native command's error may quote them back.
ENVIRONMENT_SECRETS = ("SPRITE_TOKEN",)
_MIN_LENGTH = 4  # shorter values would mask ordinary words

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_LENGTH:
        _secrets.add(value)


def add_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        add_secret(value)


def add_environment_secrets(environ: Mapping[str, str]) -> None:
    add_secrets(environ.get(name) for name in ENVIRONMENT_SECRETS)


def redact(text: str) -> str:
    # Longest first, so that a secret containing another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def clear() -> None:
    """Forget every registered secret (for tests)."""
    _secrets.clear()
