"""The sprite stand-in behaves as the Sprites docs describe the real CLI and runtime."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from standin import fixture as standin_fixture
from standin._common import BIN_DIR
from standin.fixture import Standin, standin_supported

sprite_standin = standin_fixture.sprite_standin

SERVICE_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z \[(stdout|stderr)\] "
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def host_processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def service_json(standin: Standin, name: str, *args: str) -> Any:
    """Run sprite-env in the sprite (noise off) and parse its JSON output."""
    result = standin.exec(name, "sprite-env", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- account and lifecycle ----------------------------------------------------------


def test_not_logged_in_and_no_org_errors(sprite_standin: Standin) -> None:
    sprite_standin.logout()
    result = sprite_standin.run("list")
    assert result.returncode == 1
    assert (
        "Error: authentication failed: no authentication found. "
        "Please run 'sprite login' first" in result.stderr
    )

    sprite_standin.login(with_org=False)
    result = sprite_standin.run("create", "--skip-console", "demo")
    assert result.returncode == 1
    assert "no organizations configured. Run 'sprite login' to authenticate" in (
        result.stderr
    )


def test_create_list_destroy(sprite_standin: Standin, tmp_path: Path) -> None:
    created = sprite_standin.run("create", "--skip-console", "--label", "x", "alpha")
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines() == [
        "Creating sprite alpha...",
        "✓ Sprite alpha created successfully!",
    ]
    sprite_standin.run(
        "create", "-o", sprite_standin.org, "--skip-console", "beta", check=True
    )

    duplicate = sprite_standin.run("create", "--skip-console", "alpha")
    assert duplicate.returncode == 1
    assert "Error creating sprite: failed to create sprite (status 409): {" in (
        duplicate.stderr
    )
    invalid = sprite_standin.run("create", "--skip-console", "Not_A_Label")
    assert invalid.returncode == 1
    assert "(status 400)" in invalid.stderr

    assert sprite_standin.run("list").stdout == "alpha\nbeta\n"
    assert sprite_standin.run("ls", "--prefix", "be").stdout == "beta\n"

    refused = sprite_standin.run("destroy", "alpha")
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert sprite_standin.sprite_dir("alpha").exists()

    sprite_standin.run("use", "alpha", cwd=tmp_path, check=True)
    sprite_standin.run("destroy", "--force", "-s", "alpha", cwd=tmp_path, check=True)
    assert not (tmp_path / ".sprite").exists()
    assert sprite_standin.run("list").stdout == "beta\n"
    gone = sprite_standin.run("destroy", "--force", "alpha")
    assert gone.returncode == 1


def test_create_without_skip_console_needs_a_terminal(sprite_standin: Standin) -> None:
    result = sprite_standin.run("create", "gamma")
    assert result.returncode == 1
    assert "not a terminal" in result.stderr


def test_selection_by_flag_dotsprite_or_failed_prompt(
    sprite_standin: Standin, tmp_path: Path
) -> None:
    sprite_standin.create("alpha")
    nested = tmp_path / "project" / "sub"
    nested.mkdir(parents=True)

    unselected = sprite_standin.run("exec", "--", "true", cwd=nested)
    assert unselected.returncode == 1
    assert "terminal" in unselected.stderr

    sprite_standin.run("use", "alpha", cwd=tmp_path / "project", check=True)
    marker = json.loads((tmp_path / "project" / ".sprite").read_text())
    assert marker == {"organization": sprite_standin.org, "sprite": "alpha"}
    selected = sprite_standin.run("exec", "--", "echo", "picked", cwd=nested)
    assert selected.returncode == 0
    assert selected.stdout.endswith("picked\n")

    sprite_standin.run("use", "--unset", cwd=tmp_path / "project", check=True)
    assert not (tmp_path / "project" / ".sprite").exists()


def test_info_url_and_url_access(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    expected = f"URL: https://alpha-{sprite_standin.org_id}.sprites.app/"
    info = sprite_standin.run("info", "-s", "alpha", check=True).stdout
    assert expected in info.splitlines()
    assert expected in sprite_standin.run("url", "-s", "alpha").stdout.splitlines()

    sprite_standin.run(
        "config", "update", "--url-auth", "public", "-s", "alpha", check=True
    )
    assert "URL Auth: public" in sprite_standin.run("info", "-s", "alpha").stdout
    sprite_standin.run("-s", "alpha", "url", "update", "--auth", "sprite", check=True)
    assert "URL Auth: sprite" in sprite_standin.run("info", "-s", "alpha").stdout
    assert (
        sprite_standin.run("url", "update", "--auth", "open", "-s", "alpha").returncode
        == 1
    )


def test_checkpoint_and_restore(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    note = sprite_standin.home("alpha") / "note.txt"
    note.write_text("first")
    made = sprite_standin.run(
        "checkpoint", "create", "--comment", "before", "-s", "alpha", check=True
    )
    assert made.stdout.strip() == "Checkpoint created: v1"
    note.write_text("second")
    assert "before" in sprite_standin.run("checkpoint", "list", "-s", "alpha").stdout

    sprite_standin.run("restore", "v1", "-s", "alpha", check=True)
    assert sprite_standin.exec("alpha", "cat", "note.txt").stdout.endswith("first")


# --- exec ---------------------------------------------------------------------------


def test_exec_noise_then_output_and_exit_codes(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    result = sprite_standin.exec("alpha", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout.splitlines() == [
        "Connecting to alpha...",
        "Running: sh -c echo out; echo err >&2; exit 3",
        "out",
    ]
    assert result.stderr == "err\n"

    missing = sprite_standin.exec("alpha", "no-such-command-here")
    assert missing.returncode == 127

    sprite_standin.set_noise(False)
    quiet = sprite_standin.exec("alpha", "echo", "only")
    assert quiet.stdout == "only\n"


def test_exec_environment_directory_and_stdin(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_noise(False)
    sprite_standin.monkeypatch.setenv("HOST_ONLY_SECRET", "do-not-leak")
    (sprite_standin.home("alpha") / "work").mkdir()
    script = 'echo "$PWD|$HOME|$USER|$PATH|$A|$B|${HOST_ONLY_SECRET:-unset}"; cat'
    result = sprite_standin.run(
        "exec",
        "-s",
        "alpha",
        "--dir",
        "/home/sprite/work",
        "--env",
        "A=1,B=two",
        "--",
        "bash",
        "-c",
        script,
        input="piped data",
    )
    assert result.returncode == 0, result.stderr
    first, rest = result.stdout.split("\n", 1)
    pwd, home, user, path, a, b, leaked = first.split("|")
    assert (pwd, home, user, a, b, leaked) == (
        "/home/sprite/work",
        "/home/sprite",
        "sprite",
        "1",
        "two",
        "unset",
    )
    assert "/.sprite/bin" in path.split(":")
    assert rest == "piped data"


def test_exec_uploads_files_before_running(
    sprite_standin: Standin, tmp_path: Path
) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_noise(False)
    script = tmp_path / "run.sh"
    script.write_text("echo uploaded\n")
    script.chmod(0o755)
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)))
    scratch = f"/tmp/standin-upload-{os.getpid()}"
    result = sprite_standin.run(
        "exec",
        "-s",
        "alpha",
        "--file",
        f"{script}:bin/run.sh",
        "--file",
        f"{data}:{scratch}/data.bin",
        "--",
        "bash",
        "-c",
        f"stat -c %a bin/run.sh; bash bin/run.sh; cmp -s {scratch}/data.bin "
        f"{data} && echo same; rm -r {scratch}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "644\nuploaded\nsame\n"
    assert (sprite_standin.home("alpha") / "bin" / "run.sh").read_text() == (
        "echo uploaded\n"
    )


def test_exec_interrupt_gives_130_and_kills_the_remote_command(
    sprite_standin: Standin,
) -> None:
    sprite_standin.create("alpha")
    token = f"standin-sigint-{os.getpid()}"
    proc = subprocess.Popen(
        [
            "sprite",
            "exec",
            "-s",
            "alpha",
            "--",
            "python3",
            "-c",
            "import sys, time; print('started', flush=True); time.sleep(60)",
            token,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "started":
                break
        assert host_processes_with(token)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.wait()
    assert Standin.wait_for(lambda: not host_processes_with(token), timeout=5)


def test_dash_s_after_double_dash_is_taken_by_the_cli(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    result = sprite_standin.exec("alpha", "echo", "-s", "beta")
    assert result.returncode == 1
    assert 'sprite "beta" not found' in result.stderr


def test_sprites_are_isolated_from_each_other(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    sprite_standin.create("beta")
    sprite_standin.set_noise(False)
    sprite_standin.exec("alpha", "bash", "-c", "echo mine > ~/only-alpha", check=True)
    seen = sprite_standin.exec("beta", "ls", "-A", "/home/sprite")
    assert "only-alpha" not in seen.stdout
    assert (sprite_standin.home("alpha") / "only-alpha").read_text() == "mine\n"
    assert not Path("/home/sprite/only-alpha").exists()
    beta_socket = sprite_standin.exec("beta", "ls", "/.sprite")
    assert "api.sock" in beta_socket.stdout


# --- services and tasks -------------------------------------------------------------


def test_services_stream_restart_stop_and_delete(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_noise(False)
    created = sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "ticker",
        "--cmd",
        "bash",
        "--args",
        "-c,echo ready; exec sleep 60",
        "--duration",
        "1s",
    )
    assert created.returncode == 0, created.stderr
    events = [json.loads(line) for line in created.stdout.splitlines()]
    assert events[0]["type"] == "started"
    assert {"type": "stdout", "data": "ready"} in events
    assert events[-1]["type"] == "complete"
    assert "log_files" in events[-1]

    again = sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "ticker",
        "--cmd",
        "true",
        "--no-stream",
    )
    assert again.returncode == 1

    first = service_json(sprite_standin, "alpha", "services", "get", "ticker")
    assert first["name"] == "ticker"
    assert first["cmd"] == "bash"
    assert first["state"]["status"] == "running"
    assert first["state"]["restart_count"] == 0

    sprite_standin.exec(
        "alpha", "sprite-env", "services", "signal", "ticker", "KILL", check=True
    )

    def restarted() -> bool:
        state = service_json(sprite_standin, "alpha", "services", "get", "ticker")
        status, pid = state["state"]["status"], state["state"]["pid"]
        return bool(status == "running" and pid != first["state"]["pid"])

    assert Standin.wait_for(restarted, timeout=5)
    after = service_json(sprite_standin, "alpha", "services", "get", "ticker")
    assert after["state"]["restart_count"] == 1

    sprite_standin.exec("alpha", "sprite-env", "services", "stop", "ticker", check=True)
    time.sleep(0.6)  # longer than the first restart backoff
    stopped = service_json(sprite_standin, "alpha", "services", "get", "ticker")
    assert stopped["state"]["status"] == "stopped"

    sprite_standin.exec(
        "alpha", "sprite-env", "services", "delete", "ticker", check=True
    )
    listed = service_json(sprite_standin, "alpha", "services", "list")
    assert listed == []
    log = (sprite_standin.runtime("alpha") / "logs/services/ticker.log").read_text()
    assert "[stdout] ready" in log
    assert all(SERVICE_LOG_LINE.match(line) for line in log.splitlines())


def test_service_exit_is_streamed_and_http_port_is_unique(
    sprite_standin: Standin,
) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_noise(False)
    dying = sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "dies",
        "--cmd",
        "sh",
        "--args",
        "-c,exit 4",
        "--duration",
        "3s",
    )
    events = [json.loads(line) for line in dying.stdout.splitlines()]
    assert events[-1] == {"type": "exit", "exit_code": 4}

    first = sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "web",
        "--cmd",
        "sleep",
        "--args",
        "60",
        "--http-port",
        "8080",
        "--no-stream",
    )
    assert first.returncode == 0, first.stderr
    second = sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "web2",
        "--cmd",
        "sleep",
        "--args",
        "60",
        "--http-port",
        "8081",
        "--no-stream",
    )
    assert second.returncode == 1
    assert "409: another service already has an HTTP port configured" in second.stderr


def test_tasks_api(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_noise(False)

    def curl(*args: str) -> tuple[int, str]:
        result = sprite_standin.exec(
            "alpha",
            "sprite-env",
            "curl",
            "--silent",
            "--write-out",
            "\n%{http_code}",
            *args,
        )
        body, _, code = result.stdout.rpartition("\n")
        return int(code), body

    assert (
        curl("-X", "POST", "/v1/tasks", "-d", '{"name":"a","expire":"30m"}')[0] == 201
    )
    assert curl("-X", "POST", "/v1/tasks", "-d", '{"name":"a","expire":60}')[0] == 409
    assert curl("-X", "PUT", "/v1/tasks/b", "-d", '{"expire":"1s"}')[0] == 200
    assert curl("-X", "PUT", "/v1/tasks/c", "-d", '{"expire":"2h"}')[0] == 400
    status, body = curl("/v1/tasks")
    assert status == 200
    assert sorted(t["name"] for t in json.loads(body)["tasks"]) == ["a", "b"]
    assert {"name", "started_at", "expires_at"} <= set(json.loads(body)["tasks"][0])
    assert curl("-X", "DELETE", "/v1/tasks/a")[0] == 204
    assert curl("-X", "DELETE", "/v1/tasks/a")[0] == 404

    time.sleep(1.2)
    assert json.loads(curl("/v1/tasks")[1]) == {"tasks": []}


# --- pausing and proxy --------------------------------------------------------------


def log_lines(standin: Standin, name: str, service: str) -> int:
    log = standin.runtime(name) / "logs" / "services" / f"{service}.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_idle_sprite_pauses_and_exec_thaws_it(sprite_standin: Standin) -> None:
    sprite_standin.set_idle(1.0)
    sprite_standin.create("alpha")
    sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "tick",
        "--cmd",
        "bash",
        "--args",
        "-c,while true; do echo tick; sleep 0.1; done",
        "--no-stream",
        check=True,
    )
    assert Standin.wait_for(lambda: sprite_standin.is_paused("alpha"), timeout=5)
    time.sleep(0.2)  # lines written just before the freeze may still be in the pipe
    frozen_at = log_lines(sprite_standin, "alpha", "tick")
    time.sleep(0.4)
    assert log_lines(sprite_standin, "alpha", "tick") == frozen_at

    sprite_standin.exec("alpha", "sleep", "0.3", check=True)
    assert log_lines(sprite_standin, "alpha", "tick") > frozen_at
    assert "Status: " in sprite_standin.run("info", "-s", "alpha").stdout


def test_task_keeps_sprite_awake_until_it_expires(sprite_standin: Standin) -> None:
    sprite_standin.set_idle(0.5)
    sprite_standin.create("alpha")
    sprite_standin.exec(
        "alpha",
        "sprite-env",
        "curl",
        "--silent",
        "-X",
        "PUT",
        "/v1/tasks/busy",
        "-d",
        '{"expire":"2s"}',
        check=True,
    )
    time.sleep(1.2)
    assert not sprite_standin.is_paused("alpha")
    assert Standin.wait_for(lambda: sprite_standin.is_paused("alpha"), timeout=4)


def test_proxy_forwards_thaws_and_rejects_busy_port(
    sprite_standin: Standin, tmp_path: Path
) -> None:
    sprite_standin.set_idle(1.0)
    sprite_standin.create("alpha")
    remote, local = free_port(), free_port()
    (sprite_standin.home("alpha") / "index.html").write_text("hello from alpha")
    sprite_standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "web",
        "--cmd",
        "python3",
        "--args",
        f"-m,http.server,{remote},--bind,127.0.0.1",
        "--no-stream",
        check=True,
    )
    proxy = subprocess.Popen(
        ["sprite", "proxy", "-s", "alpha", f"{local}:{remote}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        assert "Forwarding" in proxy.stdout.readline()
        assert Standin.wait_for(lambda: sprite_standin.is_paused("alpha"), timeout=5)

        with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10) as answer:
            assert answer.read() == b"hello from alpha"
        assert not sprite_standin.is_paused("alpha")

        busy = sprite_standin.run("proxy", "-s", "alpha", f"{local}:{remote}")
        assert busy.returncode == 1
        assert "address already in use" in busy.stderr
    finally:
        proxy.terminate()
        assert proxy.wait(timeout=5) == 0
    assert sprite_standin.proxy_pids() == []


# --- knobs --------------------------------------------------------------------------


def test_fault_injection_rate_limit_and_generic(sprite_standin: Standin) -> None:
    sprite_standin.set_fault(
        "create", kind="rate_limit", times=1, retry_after_seconds=7
    )
    limited = sprite_standin.run("create", "--skip-console", "alpha")
    assert limited.returncode == 1
    prefix = "Error creating sprite: failed to create sprite (status 429): "
    assert limited.stderr.startswith(prefix)
    body = json.loads(limited.stderr.removeprefix(prefix))
    assert body["error"] == "sprite_creation_rate_limited"
    assert body["retry_after_seconds"] == 7
    sprite_standin.create("alpha")

    sprite_standin.set_fault("list", exit_code=3, stderr="Error: boom", times=2)
    assert [sprite_standin.run("list").returncode for _ in range(3)] == [3, 3, 0]


def test_transport_fault_cuts_exec_midway(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_noise(False)
    sprite_standin.set_fault("exec", kind="transport", after_bytes=6, times=1)
    token = f"standin-transport-{os.getpid()}"
    cut = sprite_standin.exec(
        "alpha",
        "python3",
        "-c",
        "import time\nfor i in range(100): print(f'line{i}', flush=True); "
        "time.sleep(0.05)",
        token,
    )
    assert cut.returncode == 1
    assert cut.stdout == "line0\n"
    assert "connection lost" in cut.stderr
    assert Standin.wait_for(lambda: not host_processes_with(token), timeout=5)
    assert sprite_standin.exec("alpha", "echo", "fine").stdout == "fine\n"


def test_latency_and_invocation_log(sprite_standin: Standin) -> None:
    sprite_standin.create("alpha")
    sprite_standin.set_latency(0.3)
    sprite_standin.run("x", "-s", "alpha", "--", "true", check=True)
    sprite_standin.run("list", check=True)
    records = sprite_standin.invocations()
    assert sprite_standin.count("exec") == 1
    assert sprite_standin.count("create") == 1
    assert sprite_standin.count() == 3
    run = next(r for r in records if r["subcommand"] == "exec")
    assert run["argv"] == ["sprite", "x", "-s", "alpha", "--", "true"]
    assert run["exit_code"] == 0
    assert run["end"] - run["start"] >= 0.3
    assert run["cwd"] == os.getcwd()


def test_seeded_home_is_hardlinked(sprite_standin: Standin, tmp_path: Path) -> None:
    tree = tmp_path / "install"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    sprite_standin.seed_new_homes(tree, ".af-remote/opencode")
    sprite_standin.create("alpha")
    seeded = sprite_standin.home("alpha") / ".af-remote/opencode/bin/tool"
    assert seeded.read_text() == "#!/bin/sh\necho tool\n"
    assert seeded.stat().st_ino == (tree / "bin" / "tool").stat().st_ino


def test_shutdown_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    supported, reason = standin_supported()
    if not supported:
        pytest.skip(reason)
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("PATH", f"{BIN_DIR}:{os.environ['PATH']}")
    monkeypatch.setenv("SPRITE_STANDIN_ROOT", str(root))
    monkeypatch.delenv("SPRITE_STANDIN_OWNER_LOCK", raising=False)
    standin = Standin(root, monkeypatch)
    standin.login()
    standin.create("alpha")
    standin.exec(
        "alpha",
        "sprite-env",
        "services",
        "create",
        "s",
        "--cmd",
        "sleep",
        "--args",
        "300",
        "--no-stream",
        check=True,
    )
    proxy = subprocess.Popen(
        ["sprite", "proxy", "-s", "alpha", f"{free_port()}:1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proxy.stdout is not None
    proxy.stdout.readline()
    pids = standin.supervisor_pids() + standin.proxy_pids()
    assert len(pids) == 2
    try:
        standin.shutdown()
        assert proxy.wait(timeout=5) == 0
        assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert not host_processes_with(str(root))
    finally:
        proxy.kill()
        proxy.wait()
