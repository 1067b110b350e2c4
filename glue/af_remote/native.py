"""Running native commands (sprite, git, bash) through plumbum.

Each command is logged at INFO as a line the user could paste into a shell, and its
output at DEBUG (``-v`` shows both); everything logged is redacted. A command that
fails becomes a :class:`NativeCommandError` carrying argv, exit code and output.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from af_remote.errors import AfRemoteError, NativeCommandError
from af_remote.redact import redact
from af_remote.ui import log

TAIL_LINES = 30


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def display(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted line, safe to show."""
    return redact(shlex.join(argv))


def _command(argv: Sequence[str], hint: str | None) -> Any:
    from plumbum import local

    # Looked up on today's PATH: plumbum's own environment is a copy taken when it
    # was first imported.
    executable = shutil.which(argv[0])
    if executable is None:
        raise AfRemoteError(
            f"`{argv[0]}` is not on PATH", hint=hint or f"install {argv[0]}"
        )
    return local[executable][list(argv[1:])]


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(env) if env is not None else dict(os.environ)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    check: bool = True,
    missing_hint: str | None = None,
    secret_output: bool = False,
) -> Result:
    """Run ``argv`` to completion and capture its output.

    ``secret_output``: the output is a secret and is not logged at all.
    """
    command = _command(argv, missing_hint)
    if stdin is not None:
        command = command << stdin
    log.info("$ %s", display(argv))
    returncode, stdout, stderr = command.run(
        retcode=None,
        cwd=str(cwd) if cwd else None,
        env=_environment(env),
    )
    if not secret_output:
        _log_output(stdout, stderr)
    result = Result(list(argv), returncode, stdout, stderr)
    if check and returncode != 0:
        raise failure(result, f"`{argv[0]} {argv[1] if len(argv) > 1 else ''}` failed")
    return result


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    missing_hint: str | None = None,
) -> Result:
    """Run ``argv`` and hand each stdout line to ``on_line`` as it arrives.

    stderr is logged at DEBUG as it comes and its tail is kept for the error. On
    Ctrl-C the child (in our process group) gets the signal too; we wait for it to
    end before re-raising, so that no native command outlives af-remote.
    """
    command = _command(argv, missing_hint)
    log.info("$ %s", display(argv))
    process = command.popen(
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd) if cwd else None,
        env=_environment(env),
        text=True,
        bufsize=1,
    )
    stderr_tail: deque[str] = deque(maxlen=TAIL_LINES)
    stdout_tail: deque[str] = deque(maxlen=TAIL_LINES)
    reader = threading.Thread(
        target=_drain, args=(process.stderr, stderr_tail), daemon=True
    )
    reader.start()
    try:
        for line in cast("IO[str]", process.stdout):
            line = line.rstrip("\n")
            stdout_tail.append(line)
            log.debug("  | %s", line)
            on_line(line)
        returncode = process.wait()
    except BaseException:
        _stop(process)
        raise
    reader.join(timeout=5)
    return Result(
        list(argv), returncode, "\n".join(stdout_tail), "\n".join(stderr_tail)
    )


def failure(
    result: Result, message: str, hint: str | None = None
) -> NativeCommandError:
    output = (result.stderr.strip() or result.stdout.strip()).splitlines()
    last = output[-1] if output else ""
    detail = f": {redact(last)}" if last else ""
    return NativeCommandError(
        f"{message} (exit {result.returncode}){detail}",
        argv=[redact(arg) for arg in result.argv],
        exit_code=result.returncode,
        output=redact("\n".join(output)),
        hint=hint or f"to see it yourself: {display(result.argv)}",
    )


def _drain(pipe: IO[str] | None, tail: deque[str]) -> None:
    if pipe is None:
        return
    for line in pipe:
        line = line.rstrip("\n")
        tail.append(line)
        log.debug("  ! %s", line)


def _stop(process: subprocess.Popen[str]) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()


def _log_output(stdout: str, stderr: str) -> None:
    for line in stdout.splitlines():
        log.debug("  | %s", line)
    for line in stderr.splitlines():
        log.debug("  ! %s", line)
