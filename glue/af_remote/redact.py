"""Keep secret values out of everything that leaves the process.

Code that reads a secret registers it with :func:`add_secret`; every path that prints,
logs or records text passes it through :func:`redact` first.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "[redacted]"
_MIN_LENGTH = 4  # shorter values would mask ordinary words

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_LENGTH:
        _secrets.add(value)


def add_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        add_secret(value)


def redact(text: str) -> str:
    # Longest first, so that a secret containing another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def clear() -> None:
    """Forget every registered secret (for tests)."""
    _secrets.clear()
