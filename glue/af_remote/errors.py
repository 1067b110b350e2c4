"""Errors that reach the user.

Every error af-remote raises on purpose derives from :class:`AfRemoteError`. The
top-level handler in :mod:`af_remote.cli` prints ``str(error)`` as one line on stderr
and exits with ``error.exit_code``; tracebacks appear only with ``-v``.

    AfRemoteError (exit 1)
    +-- UsageError (exit 2)            bad flags or values
    +-- NotReadyError (exit 3)         the spawn exists but is not running yet
    +-- NativeCommandError (exit 1)    a provider/git command failed
    +-- RegistryError (exit 1)         an Aetherflow registry file cannot be used
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_READY = 3
EXIT_INTERRUPTED = 130


class AfRemoteError(Exception):
    """A failure with a message meant for the user."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(AfRemoteError):
    exit_code = EXIT_USAGE


class NotReadyError(AfRemoteError):
    exit_code = EXIT_NOT_READY


class RegistryError(AfRemoteError):
    """A registry file that does not parse, has a newer schema, or cannot be locked."""


class NativeCommandError(AfRemoteError):
    """A native command (sprite, git, bash, opencode) exited non-zero.

    ``argv`` and ``output`` are already redacted when they reach this class.
    """

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        exit_code: int | None,
        output: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = list(argv)
        self.returncode = exit_code
        self.output = output
