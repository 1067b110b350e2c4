"""What af-remote tells the user: progress, warnings, logs and ``--json`` output.

Progress and logs go to stderr so that stdout carries only results (text or JSON).
Every line passes through :func:`af_remote.redact.redact` on its way out.
"""

from __future__ import annotations

import sys

from af_remote.redact import redact

TYPE_CHECKING = False  # typing itself is not worth importing for --help
if TYPE_CHECKING:
    import logging

QUIET = 0
NORMAL = 1
VERBOSE = 2

_verbosity = NORMAL
_logger: logging.Logger | None = None


def configure(*, verbose: bool, quiet: bool) -> None:
    """Set the verbosity: ``-v`` logs every native command and its output."""
    global _verbosity
    _verbosity = VERBOSE if verbose else QUIET if quiet else NORMAL
    if _logger is not None:
        _set_level(_logger)


def __getattr__(name: str) -> logging.Logger:
    # `log` is made on first use: importing logging costs more than `--help` and
    # `ls` take otherwise, and they never log.
    if name == "log":
        return _make_logger()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_logger() -> logging.Logger:
    global _logger
    if _logger is None:
        import contextlib
        import logging

        class RedactedStderr(logging.Handler):
            # Writes to whatever sys.stderr is at the time, and never lets
            # logging print a raw traceback of its own (which is not redacted).
            def emit(self, record: logging.LogRecord) -> None:
                with contextlib.suppress(Exception):  # a log line is not worth a crash
                    print(redact(self.format(record)), file=sys.stderr, flush=True)

        handler = RedactedStderr()
        handler.setFormatter(logging.Formatter("af-remote: %(message)s"))
        logger = logging.getLogger("af_remote")
        logger.handlers[:] = [handler]
        logger.propagate = False
        _set_level(logger)
        _logger = logger
    return _logger


def _set_level(logger: logging.Logger) -> None:
    import logging

    levels = {VERBOSE: logging.DEBUG, QUIET: logging.ERROR, NORMAL: logging.WARNING}
    logger.setLevel(levels[_verbosity])


def progress(message: str) -> None:
    """A step of something slow; silent with ``-q``."""
    if _verbosity != QUIET:
        print(redact(f"  {message}"), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    if _verbosity != QUIET:
        print(redact(f"af-remote: warning: {message}"), file=sys.stderr, flush=True)


def error(message: str) -> None:
    print(redact(f"af-remote: error: {message}"), file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    """A result line on stdout."""
    print(redact(text), flush=True)


def out_json(data: object) -> None:
    import json

    # Redacted before encoding too: JSON escapes quotes, backslashes, control and
    # non-ASCII characters, and a secret holding one would no longer match after.
    text = json.dumps(_redacted(data), indent=2, sort_keys=True)
    print(redact(text), flush=True)


def _redacted(data: object) -> object:
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {_redacted(key): _redacted(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_redacted(value) for value in data]
    return data
