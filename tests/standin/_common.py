"""State layout and plumbing shared by the stand-in's executables and its fixture.

Everything lives under one root directory (``SPRITE_STANDIN_ROOT``)::

    ROOT/auth.json                      logged in? current org
    ROOT/orgs/ORG/org.json              {"name", "id"}
    ROOT/orgs/ORG/sprites/NAME/         one sprite (its "state dir")
        sprite.json                     name, id, labels, url auth, created_at
        home/      -> /home/sprite      bind-mounted inside the sandbox
        dotsprite/ -> /.sprite
        checkpoints/vN/                 filesystem snapshots
        power                           running | warm | cold (by the supervisor)
        supervisor.json, supervisor.lock, supervisor.log, services.json
    ROOT/faults.json                    injected failures, consumed per invocation
    ROOT/seed.json                      trees copied into every new sprite's home
    ROOT/invocations.jsonl              one line per `sprite` invocation
    ROOT/proxies/PID                    running `sprite proxy` processes

Only the standard library is used so that the executables start fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
BIN_DIR = PACKAGE_DIR / "bin"
SANDBOX_HOME = "/home/sprite"
SANDBOX_RUNTIME = "/.sprite"
SANDBOX_PATH = (
    "/.sprite/bin:/home/sprite/.local/bin:/usr/local/sbin:/usr/local/bin:"
    "/usr/sbin:/usr/bin:/sbin:/bin"
)
DEFAULT_IDLE_SECONDS = 30.0


class StandinError(Exception):
    """A failure reported to the user as one line on stderr with an exit code."""

    def __init__(self, message: str, exit_code: int = 1, *, bare: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.bare = bare  # the message carries its own prefix (no "Error: ")


def root_dir() -> Path:
    value = os.environ.get("SPRITE_STANDIN_ROOT")
    if not value:
        raise StandinError("SPRITE_STANDIN_ROOT is not set (sprite stand-in)")
    return Path(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        return default


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def write_json(path: Path, data: Any) -> None:
    """Replace the file atomically so that concurrent readers never see half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_at(epoch: float) -> str:
    millis = int((epoch % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


class SpriteState:
    """Host-side view of one sprite's state directory."""

    def __init__(self, root: Path, org: str, name: str) -> None:
        self.root = root
        self.org = org
        self.name = name
        self.dir = root / "orgs" / org / "sprites" / name

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def runtime(self) -> Path:
        return self.dir / "dotsprite"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    def exists(self) -> bool:
        return (self.dir / "sprite.json").is_file()

    def meta(self) -> dict[str, Any]:
        data = read_json(self.dir / "sprite.json", {})
        return data if isinstance(data, dict) else {}

    def power(self) -> str:
        if not supervisor_running(self):
            return "cold"
        try:
            return (self.dir / "power").read_text().strip() or "running"
        except FileNotFoundError:
            return "running"


def host_socket_name(state_dir: Path) -> str:
    """Abstract socket of a sprite's supervisor, reachable from the host.

    Abstract names have no path-length limit and vanish with the process; they are
    scoped by network namespace, which the sandboxes share with the host.
    """
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:24]
    return f"\0sprite-standin-{digest}"


# --- supervisor lifecycle -----------------------------------------------------------


def supervisor_running(state: SpriteState) -> bool:
    """The supervisor holds an exclusive lock on supervisor.lock for its whole life."""
    lock = state.dir / "supervisor.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_supervisor(state: SpriteState) -> int:
    """Start the sprite's supervisor unless it runs; return its host pid."""
    with locked(state.dir / "start.lock"):
        if supervisor_running(state):
            info = read_json(state.dir / "supervisor.json", {})
            return int(info.get("pid", 0))
        return _start_supervisor(state)


def _start_supervisor(state: SpriteState) -> int:
    for mount_point in (SANDBOX_HOME, SANDBOX_RUNTIME):
        os.makedirs(mount_point, exist_ok=True)
    log = open(state.dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    # The supervisor becomes PID 1 of a private PID namespace: when it dies, the kernel
    # kills every process of the sandbox, so no leftovers survive a destroy.
    argv = [
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "--kill-child=SIGKILL",
        sys.executable,
        "-I",
        "-S",
        str(PACKAGE_DIR / "_supervisor.py"),
        str(state.dir),
    ]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    proc.stdout.close()
    if ready.strip() != b"ready":
        proc.kill()
        proc.wait()
        raise StandinError(f"sprite {state.name} failed to boot (see supervisor.log)")
    pid = _only_child(proc.pid)
    write_json(
        state.dir / "supervisor.json",
        {"pid": pid, "unshare_pid": proc.pid, "started_at": now_iso()},
    )
    # The unshare process outlives this CLI; the Popen object must not reap it later.
    proc.returncode = 0
    return pid


def _only_child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


def stop_supervisor(state: SpriteState, timeout: float = 5.0) -> None:
    """Stop the supervisor (and with it the whole sandbox), waiting for it to end."""
    if not supervisor_running(state):
        return
    info = read_json(state.dir / "supervisor.json", {})
    for key, sig in (("pid", signal.SIGTERM), ("unshare_pid", signal.SIGKILL)):
        pid = int(info.get(key, 0))
        if pid and _wait_exit(pid, sig, timeout):
            break
    # Whatever happened, the lock tells the truth: wait until it is free.
    with locked(state.dir / "supervisor.lock"):
        pass


def _wait_exit(pid: int, sig: int, timeout: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        os.kill(pid, sig)
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    except ProcessLookupError:
        return True
    finally:
        os.close(pidfd)


# --- talking to the supervisor from the host ------------------------------------------


def host_request(
    state: SpriteState, method: str, path: str, body: Any = None
) -> tuple[int, bytes]:
    sock = _connect(state)
    with sock:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.0\r\nHost: sprite\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header, _, content = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1]) if header else 0
    return status, content


def _connect(state: SpriteState) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(host_socket_name(state.dir))
    except OSError as exc:
        sock.close()
        raise StandinError(f"cannot reach sprite {state.name}: {exc}") from exc
    return sock


class Hold:
    """Keeps the sprite active (and thawed) while open: an exec or a proxied connection.

    The supervisor counts the open connection, so a hold ends by itself when its
    process dies, however it dies.
    """

    def __init__(self, state: SpriteState, reason: str) -> None:
        self._sock = _connect(state)
        self._sock.sendall(
            f"POST /standin/hold?reason={reason} HTTP/1.0\r\nHost: sprite\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self._sock.recv(4096)
            if not chunk:
                break
            received += chunk

    def release(self) -> None:
        self._sock.close()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def watch_owner_lock(on_owner_gone: Any) -> None:
    """Call on_owner_gone once the test session that owns this root is gone.

    The fixture holds an exclusive flock on SPRITE_STANDIN_OWNER_LOCK; a shared lock is
    granted to us only when it lets go (teardown or a crash), so no polling is needed.
    """
    path = os.environ.get("SPRITE_STANDIN_OWNER_LOCK")
    if not path:
        return

    def wait() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            pass
        on_owner_gone()

    threading.Thread(target=wait, name="owner-lock", daemon=True).start()


def copy_tree(src: Path, dest: Path, *, hardlink: bool = False) -> None:
    """Copy a tree, hardlinking files when asked and possible (same filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if hardlink:
        done = subprocess.run(
            ["cp", "-al", str(src), str(dest)], capture_output=True, check=False
        )
        if done.returncode == 0:
            return
        shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(
        ["cp", "-a", "--reflink=auto", str(src), str(dest)],
        capture_output=True,
        check=True,
    )
