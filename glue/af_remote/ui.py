"""What af-remote tells the user: progress, warnings, logs and ``--json`` output.

Progress and logs go to stderr so that stdout carries only results (text or JSON).
Every line passes through :func:`af_remote.redact.redact` on its way out.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from af_remote.redact import redact

log = logging.getLogger("af_remote")

QUIET = 0
NORMAL = 1
VERBOSE = 2

_verbosity = NORMAL


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(*, verbose: bool, quiet: bool) -> None:
    """Set the verbosity: ``-v`` logs every native command and its output."""
    global _verbosity
    _verbosity = VERBOSE if verbose else QUIET if quiet else NORMAL
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("af-remote: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(
        logging.DEBUG
        if _verbosity == VERBOSE
        else logging.ERROR
        if _verbosity == QUIET
        else logging.WARNING
    )


def is_verbose() -> bool:
    return _verbosity == VERBOSE


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


def out_json(data: Any) -> None:
    print(redact(json.dumps(data, indent=2, sort_keys=True)), flush=True)
