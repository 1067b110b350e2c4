"""Runs inside a sandbox (entered with nsenter): uploads files, then execs the command.

Reads its instructions as JSON from the file descriptor given as argv[1], so that the
sandbox environment is built from scratch instead of leaking the host's. Uploaded files
arrive as inherited descriptors opened on the host.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import termios

HOME = "/home/sprite"


def upload(source_fd: int, dest: str) -> None:
    target = dest if dest.startswith("/") else os.path.join(HOME, dest)
    parent = os.path.dirname(target)
    if parent:
        os.makedirs(parent, exist_ok=True)
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while chunk := os.read(source_fd, 1 << 20):
            os.write(out, chunk)
        # Modes are not carried over by the real upload either: always 0644.
        os.fchmod(out, 0o644)
    finally:
        os.close(out)
        os.close(source_fd)


def fail(message: str, code: int) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    with os.fdopen(int(sys.argv[1]), "rb") as spec_file:
        spec = json.load(spec_file)

    for item in spec["uploads"]:
        try:
            upload(item["fd"], item["dest"])
        except OSError as exc:
            fail(f"Error: failed to upload {item['dest']}: {exc.strerror}", 1)

    if spec.get("tty"):
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        os.chdir(spec["cwd"])
    except OSError as exc:
        fail(f"Error: cannot change directory to {spec['cwd']}: {exc.strerror}", 1)

    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 - no shell, as remote
    except FileNotFoundError:
        fail(f'exec: "{argv[0]}": executable file not found in $PATH', 127)
    except PermissionError:
        fail(f'exec: "{argv[0]}": permission denied', 126)
    except OSError as exc:
        fail(f'exec: "{argv[0]}": {exc.strerror}', 126)


if __name__ == "__main__":
    main()
