"""The per-sprite supervisor: PID 1 of the sandbox, services, tasks and idle pausing.

Started by the `sprite` CLI as ``unshare --mount --pid --fork --mount-proc ...
_supervisor.py STATE_DIR``. It bind-mounts the sprite's home and runtime directories
over /home/sprite and /.sprite, then serves the management API on /.sprite/api.sock (for
`sprite-env` inside the sandbox) and on an abstract socket (for the host CLI).

Being PID 1 of its own PID namespace it sees exactly the sandbox's processes in /proc,
reaps orphans, and takes every sandbox process with it when it exits.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import queue
import re
import select
import signal
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.append(str(Path(__file__).resolve().parent.parent))

import contextlib

from standin._common import (
    DEFAULT_IDLE_SECONDS,
    SANDBOX_HOME,
    SANDBOX_PATH,
    SANDBOX_RUNTIME,
    env_float,
    host_socket_name,
    iso_at,
    read_json,
    watch_owner_lock,
    write_json,
)

MS_BIND = 4096
MS_REC = 16384
MAX_TASK_SECONDS = 3600.0
STOP_GRACE_SECONDS = 3.0
SIGNALS = {
    name.removeprefix("SIG"): int(sig)
    for name, sig in signal.Signals.__members__.items()
    if not name.startswith("SIG_")
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_duration(value: Any) -> float:
    """Seconds from a number, "90", "30m", "1h30m", "500ms" (Go duration style)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(value)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


class Service:
    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.cmd: str = spec["cmd"]
        self.args: list[str] = list(spec.get("args") or [])
        self.env: dict[str, str] = dict(spec.get("env") or {})
        self.dir: str = spec.get("dir") or SANDBOX_HOME
        self.needs: list[str] = list(spec.get("needs") or [])
        self.http_port: int | None = spec.get("http_port")
        self.desired: str = spec.get("desired", "running")
        self.status = "stopped"
        self.pid: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.restart_count = 0
        self.crashes = 0
        self.stopping = False
        self.pending_start = False
        self.timer: threading.Timer | None = None
        self.subscribers: list[queue.Queue[dict[str, Any]]] = []

    def spec(self) -> dict[str, Any]:
        return {
            "cmd": self.cmd,
            "args": self.args,
            "env": self.env,
            "dir": self.dir,
            "needs": self.needs,
            "http_port": self.http_port,
            "desired": self.desired,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cmd": self.cmd,
            "args": self.args,
            "needs": self.needs,
            "http_port": self.http_port,
            "state": {
                "status": self.status,
                "pid": self.pid,
                "started_at": iso_at(self.started_at) if self.started_at else None,
                "restart_count": self.restart_count,
            },
        }

    @property
    def log_path(self) -> str:
        return f"{SANDBOX_RUNTIME}/logs/services/{self.name}.log"


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.idle_seconds = env_float(
            "SPRITE_STANDIN_IDLE_SECONDS", DEFAULT_IDLE_SECONDS
        )
        self.cold_seconds = env_float("SPRITE_STANDIN_COLD_SECONDS", 0.0)
        self.cond = threading.Condition(threading.RLock())
        self.services: dict[str, Service] = {}
        self.tasks: dict[str, dict[str, float]] = {}
        self.holds = 0
        self.power = "running"
        self.last_activity = time.monotonic()
        self.warm_since = 0.0
        self.shutting_down = False
        self.log_lock = threading.Lock()

    # --- boot and shutdown ------------------------------------------------------

    def boot(self) -> None:
        self._mount(self.state_dir / "home", SANDBOX_HOME)
        self._mount(self.state_dir / "dotsprite", SANDBOX_RUNTIME)
        Path(f"{SANDBOX_RUNTIME}/logs/services").mkdir(parents=True, exist_ok=True)
        self._write_power()
        saved = read_json(self.state_dir / "services.json", {}) or {}
        for name, spec in saved.items():
            self.services[name] = Service(name, spec)
        for service in self.services.values():
            if service.desired == "running":
                self._start(service)

    @staticmethod
    def _mount(source: Path, target: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.mount(
            str(source).encode(), target.encode(), None, MS_BIND | MS_REC, None
        )
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(
                errno, f"mount --bind {source} {target}: {os.strerror(errno)}"
            )

    def shutdown(self, wake_fd: int) -> None:
        with self.cond:
            self.shutting_down = True
            self.cond.notify_all()
            running = [s for s in self.services.values() if s.pid]
            for service in running:
                if service.timer:
                    service.timer.cancel()
                service.stopping = True
        self._thaw_all()
        for service in running:
            self._signal_group(service, signal.SIGTERM)
        # Reaping happens on the main thread, which is us now: wait on the signal pipe.
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(s.pid for s in running):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([wake_fd], [], [], remaining)[0]:
                break
            os.read(wake_fd, 64)
            self.reap()

    def _save(self) -> None:
        specs = {name: s.spec() for name, s in self.services.items()}
        write_json(self.state_dir / "services.json", specs)

    def _write_power(self) -> None:
        try:
            (self.state_dir / "power.tmp").write_text(self.power + "\n")
            os.replace(self.state_dir / "power.tmp", self.state_dir / "power")
        except OSError:
            pass

    # --- processes ----------------------------------------------------------------

    @staticmethod
    def _base_env() -> dict[str, str]:
        return {
            "HOME": SANDBOX_HOME,
            "USER": "sprite",
            "LOGNAME": "sprite",
            "SHELL": "/bin/bash",
            "PATH": SANDBOX_PATH,
            "LANG": "C.UTF-8",
        }

    def _start(self, service: Service) -> None:
        """Start a service process (caller holds the lock)."""
        if service.pid or self.shutting_down:
            return
        if self.power != "running":
            service.pending_start = True
            return
        for needed in service.needs:
            dependency = self.services.get(needed)
            if dependency and dependency is not service:
                self._start(dependency)
        service.pending_start = False
        service.status = "starting"
        env = self._base_env() | service.env
        try:
            popen = subprocess.Popen(
                [service.cmd, *service.args],
                cwd=service.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            service.status = "failed"
            message = f'exec: "{service.cmd}": {exc.strerror}'
            self._log_line(service, "stderr", message)
            self._publish(service, {"type": "error", "error": message})
            self._publish(service, {"type": "exit", "exit_code": 127})
            self._schedule_restart(service)
            return
        Path(service.log_path).touch()
        service.popen = popen
        service.pid = popen.pid
        service.started_at = time.time()
        service.status = "running"
        self._publish(
            service,
            {
                "type": "started",
                "name": service.name,
                "pid": popen.pid,
                "timestamp": iso_at(service.started_at),
            },
        )
        for stream_name, stream in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            threading.Thread(
                target=self._pump, args=(service, stream_name, stream), daemon=True
            ).start()

    def _pump(self, service: Service, stream_name: str, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode(errors="replace").rstrip("\n")
            self._log_line(service, stream_name, text)
            with self.cond:
                self._publish(service, {"type": stream_name, "data": text})
        stream.close()

    def _log_line(self, service: Service, stream_name: str, text: str) -> None:
        line = f"{iso_at(time.time())} [{stream_name}] {text}\n"
        with self.log_lock, open(service.log_path, "a") as log:
            log.write(line)

    def _publish(self, service: Service, event: dict[str, Any]) -> None:
        for subscriber in service.subscribers:
            subscriber.put(event)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            with self.cond:
                for service in self.services.values():
                    if service.pid == pid:
                        self._on_exit(service, code)
                self.cond.notify_all()

    def _on_exit(self, service: Service, code: int) -> None:
        if service.popen is not None:
            service.popen.returncode = code  # reaped here; Popen must not wait again
        exit_code = 128 - code if code < 0 else code
        ran_for = time.time() - (service.started_at or time.time())
        # Whatever the service left behind in its process group goes with it.
        self._signal_group(service, signal.SIGKILL)
        service.pid = None
        service.popen = None
        self._publish(service, {"type": "exit", "exit_code": exit_code})
        if service.stopping or service.desired != "running" or self.shutting_down:
            service.stopping = False
            service.status = "stopped"
            self._publish(service, {"type": "stopped"})
            return
        service.crashes = 1 if ran_for > 10 else service.crashes + 1
        service.restart_count += 1
        self._schedule_restart(service)

    def _schedule_restart(self, service: Service) -> None:
        service.status = "starting" if service.status != "failed" else "failed"
        delay = min(0.25 * 2 ** max(service.crashes - 1, 0), 4.0)
        service.timer = threading.Timer(delay, self._restart_after_crash, [service])
        service.timer.daemon = True
        service.timer.start()

    def _restart_after_crash(self, service: Service) -> None:
        with self.cond:
            service.timer = None
            if (
                self.services.get(service.name) is service
                and service.desired == "running"
            ):
                self._start(service)

    def _signal_group(self, service: Service, sig: int) -> None:
        if service.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.pid, sig)

    def _stop(self, service: Service) -> None:
        """Stop a service and wait for it to end (caller holds the lock)."""
        if service.timer:
            service.timer.cancel()
            service.timer = None
        service.pending_start = False
        if not service.pid:
            service.status = "stopped"
            return
        service.stopping = True
        service.status = "stopping"
        self._publish(service, {"type": "stopping"})
        self._signal_group(service, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while service.pid and time.monotonic() < deadline:
            self.cond.wait(deadline - time.monotonic())
        if service.pid:
            self._signal_group(service, signal.SIGKILL)
            while service.pid:
                self.cond.wait(1.0)

    # --- pausing --------------------------------------------------------------------

    @staticmethod
    def _sandbox_pids() -> list[int]:
        """Every process of the sandbox but this one (we are PID 1 here)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and entry != "1":
                pids.append(int(entry))
        return pids

    def _freeze_all(self) -> None:
        frozen: set[int] = set()
        # A process may fork while we go through the list: repeat until nothing new.
        for _ in range(5):
            fresh = [pid for pid in self._sandbox_pids() if pid not in frozen]
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                frozen.add(pid)

    def _thaw_all(self) -> None:
        for pid in self._sandbox_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _kill_all(self) -> None:
        for service in self.services.values():
            if service.pid:
                service.stopping = True
        for pid in self._sandbox_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wake(self) -> None:
        """Thaw (or cold-boot) the sandbox; caller holds the lock."""
        if self.power == "running":
            return
        if self.power == "warm":
            self._thaw_all()
        self.power = "running"
        self.last_activity = time.monotonic()
        self._write_power()
        for service in self.services.values():
            if service.pending_start or (
                service.desired == "running" and not service.pid
            ):
                self._start(service)
        self.cond.notify_all()

    def _prune_tasks(self, now: float) -> None:
        for name, task in list(self.tasks.items()):
            if task["expires_mono"] <= now:
                del self.tasks[name]
                self.last_activity = max(self.last_activity, task["expires_mono"])

    def run_idle_clock(self) -> None:
        """Freeze the sandbox after the idle window; optionally go cold later."""
        with self.cond:
            while not self.shutting_down:
                now = time.monotonic()
                self._prune_tasks(now)
                timeout: float | None = None
                if self.holds or self.tasks:
                    if self.tasks:
                        timeout = (
                            min(t["expires_mono"] for t in self.tasks.values()) - now
                        )
                elif self.power == "running":
                    timeout = self.last_activity + self.idle_seconds - now
                    if timeout <= 0:
                        self._freeze_all()
                        self.power = "warm"
                        self.warm_since = now
                        self._write_power()
                        continue
                elif self.power == "warm" and self.cold_seconds > 0:
                    timeout = self.warm_since + self.cold_seconds - now
                    if timeout <= 0:
                        self._kill_all()
                        self.power = "cold"
                        self._write_power()
                        self._thaw_all()  # let the killed processes die
                        continue
                self.cond.wait(max(timeout, 0.01) if timeout is not None else None)

    def hold(self, delta: int) -> None:
        with self.cond:
            if delta > 0:
                self.wake()
            self.holds += delta
            self.last_activity = time.monotonic()
            self.cond.notify_all()

    # --- API: services ------------------------------------------------------------

    def create_service(self, name: str, spec: dict[str, Any]) -> Service:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ApiError(400, f"invalid service name: {name}")
        if not spec.get("cmd"):
            raise ApiError(400, "cmd is required")
        with self.cond:
            if name in self.services:
                raise ApiError(409, f"service {name} already exists")
            if spec.get("http_port") is not None and any(
                s.http_port is not None for s in self.services.values()
            ):
                raise ApiError(
                    409, "another service already has an HTTP port configured"
                )
            service = Service(name, spec)
            self.services[name] = service
            self._save()
            return service

    def service(self, name: str) -> Service:
        service = self.services.get(name)
        if service is None:
            raise ApiError(404, f"service {name} not found")
        return service

    def service_action(self, name: str, action: str, body: dict[str, Any]) -> Service:
        with self.cond:
            service = self.service(name)
            if action == "start":
                service.desired = "running"
                service.crashes = 0
                self._start(service)
            elif action == "stop":
                service.desired = "stopped"
                self._stop(service)
            elif action == "restart":
                self._stop(service)
                service.desired = "running"
                service.crashes = 0
                self._start(service)
            elif action == "signal":
                sig = SIGNALS.get(
                    str(body.get("signal", "")).upper().removeprefix("SIG")
                )
                if sig is None:
                    raise ApiError(400, f"unknown signal: {body.get('signal')}")
                if not service.pid:
                    raise ApiError(409, f"service {name} is not running")
                os.kill(service.pid, sig)
            else:
                raise ApiError(404, f"unknown action: {action}")
            self._save()
            return service

    def delete_service(self, name: str) -> None:
        with self.cond:
            service = self.service(name)
            service.desired = "stopped"
            self._stop(service)
            del self.services[name]
            self._save()

    # --- API: tasks -----------------------------------------------------------------

    def put_task(self, name: str, expire: Any, *, create_only: bool) -> dict[str, Any]:
        if not name or not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise ApiError(400, "a task needs a name")
        try:
            seconds = parse_duration(expire)
        except ValueError:
            raise ApiError(400, f"invalid expire: {expire!r}") from None
        if not 0 < seconds <= MAX_TASK_SECONDS:
            raise ApiError(400, "expire must be more than 0 and at most 1h")
        with self.cond:
            now = time.monotonic()
            self._prune_tasks(now)
            if create_only and name in self.tasks:
                raise ApiError(409, f"task {name} already exists")
            task = self.tasks.get(name) or {"started_at": time.time()}
            task["expires_mono"] = now + seconds
            task["expires_at"] = time.time() + seconds
            self.tasks[name] = task
            self.cond.notify_all()
            return self._describe_task(name, task)

    @staticmethod
    def _describe_task(name: str, task: dict[str, float]) -> dict[str, Any]:
        return {
            "name": name,
            "started_at": iso_at(task["started_at"]),
            "expires_at": iso_at(task["expires_at"]),
        }

    def list_tasks(self) -> list[dict[str, Any]]:
        with self.cond:
            self._prune_tasks(time.monotonic())
            return [self._describe_task(n, t) for n, t in sorted(self.tasks.items())]

    def delete_task(self, name: str) -> None:
        with self.cond:
            self._prune_tasks(time.monotonic())
            if self.tasks.pop(name, None) is None:
                raise ApiError(404, f"task {name} not found")
            self.last_activity = time.monotonic()
            self.cond.notify_all()


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, address: str, supervisor: Supervisor, *, inside: bool) -> None:
        self.supervisor = supervisor
        self.inside = inside
        super().__init__(address, ApiHandler)


class ApiHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "sprite"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        supervisor = self.server.supervisor
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        if self.server.inside:
            # A call from inside a frozen sandbox cannot happen, but one arriving while
            # warm wakes it, as any request to a sprite does.
            with supervisor.cond:
                supervisor.wake()
        try:
            body = self._body()
            self._route(method, parts, query, body)
        except ApiError as exc:
            self._send(exc.status, {"error": str(exc)})
        except (ValueError, TypeError, KeyError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        data = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        return data

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]
    ) -> None:
        supervisor = self.server.supervisor
        match (method, parts):
            case ("POST", ["standin", "hold"]) if not self.server.inside:
                self._hold()
            case ("GET", ["standin", "status"]) if not self.server.inside:
                self._send(200, {"power": supervisor.power, "holds": supervisor.holds})
            case ("GET", ["v1", "tasks"]):
                self._send(200, {"tasks": supervisor.list_tasks()})
            case ("POST", ["v1", "tasks"]):
                task = supervisor.put_task(
                    str(body.get("name", "")), body.get("expire"), create_only=True
                )
                self._send(201, task)
            case ("PUT", ["v1", "tasks", name]):
                self._send(
                    200,
                    supervisor.put_task(name, body.get("expire"), create_only=False),
                )
            case ("DELETE", ["v1", "tasks", name]):
                supervisor.delete_task(name)
                self._send(204, None)
            case ("GET", ["v1", "services"]):
                with supervisor.cond:
                    services = [s.describe() for s in supervisor.services.values()]
                self._send(200, services)
            case ("GET", ["v1", "services", name]):
                with supervisor.cond:
                    self._send(200, supervisor.service(name).describe())
            case ("PUT", ["v1", "services", name]):
                self._create_service(name, body, query)
            case ("POST", ["v1", "services", name, action]):
                service = supervisor.service_action(name, action, body)
                with supervisor.cond:
                    self._send(200, service.describe())
            case ("DELETE", ["v1", "services", name]):
                supervisor.delete_service(name)
                self._send(204, None)
            case _:
                raise ApiError(404, f"no route for {method} /{'/'.join(parts)}")

    def _send(self, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _hold(self) -> None:
        supervisor = self.server.supervisor
        supervisor.hold(+1)
        try:
            self.send_response(200)
            self.end_headers()
            self.wfile.flush()
            while self.rfile.read1(4096):
                pass
        except OSError:
            pass
        finally:
            supervisor.hold(-1)

    def _create_service(
        self, name: str, body: dict[str, Any], query: dict[str, str]
    ) -> None:
        supervisor = self.server.supervisor
        duration = parse_duration(query.get("duration", "5s"))
        stream = query.get("no_stream", "") not in ("1", "true")
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        service = supervisor.create_service(name, body)
        with supervisor.cond:
            if stream:
                service.subscribers.append(events)
            supervisor._start(service)
            if not stream:
                self._send(201, service.describe())
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        deadline = time.monotonic() + duration
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    done = {"stdout": service.log_path, "stderr": service.log_path}
                    self._emit({"type": "complete", "log_files": done})
                    break
                try:
                    event = events.get(timeout=remaining)
                except queue.Empty:
                    continue
                self._emit(event)
                if event["type"] == "exit":
                    break
        except OSError:
            pass
        finally:
            with supervisor.cond:
                service.subscribers.remove(events)

    def _emit(self, event: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(event).encode() + b"\n")
        self.wfile.flush()


def main() -> None:
    state_dir = Path(sys.argv[1])
    supervisor = Supervisor(state_dir)
    lock_fd = os.open(state_dir / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)

    supervisor.boot()
    sock_path = f"{SANDBOX_RUNTIME}/api.sock"
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    servers = [
        ApiServer(sock_path, supervisor, inside=True),
        ApiServer(host_socket_name(state_dir), supervisor, inside=False),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=supervisor.run_idle_clock, daemon=True).start()
    watch_owner_lock(lambda: os.write(wake_w, bytes([signal.SIGTERM])))

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    # The main thread only reacts to signals: SIGCHLD means reap, anything else means
    # stop. The wakeup fd turns signals into bytes, so this blocks without polling.
    while True:
        received = os.read(wake_r, 64)
        if any(b != signal.SIGCHLD for b in received):
            break
        supervisor.reap()
    supervisor.shutdown(wake_r)
    for server in servers:
        server.server_close()
    with contextlib.suppress(OSError):
        os.unlink(sock_path)
    os._exit(0)


if __name__ == "__main__":
    main()
