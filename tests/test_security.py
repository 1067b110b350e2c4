"""Secrets and exposure: no secret value (forwarded keys, the server password, a
provider token in the environment) in any process's argv, af-remote's output, the
project's files or the records, whatever the command, verbosity or outcome; the
OpenCode server never serves without a password; secret files are private.

The end-to-end part shares one project and one sprite stand-in per module, with a
thread sampling every process's argv for the whole module.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reliability_support
from af_remote import config, project, redact, ui
from conftest import RunCli
from e2e_support import FAKE_API_KEY, af
from reliability_support import (
    TALLY,
    ArgvSampler,
    World,
    enter,
    fake_tui,
    sprites_world,
)

tally = reliability_support.tally  # prints the counts after the session
pytestmark = pytest.mark.usefixtures("tally")

SANDBOX = "af-sec"
FILE_KEY = "sk-file-af-remote-fedcba9876543210"  # in the render's secrets.env
PASSWORD = "pw-af-remote-Zq8vYt3LmN0pXw7Rk2Jh5Gd"  # the sandbox's server password
TOKEN = "sprite-token-af-remote-31337abcdef42"  # SPRITE_TOKEN in the environment
SECRETS = [FAKE_API_KEY, FILE_KEY, PASSWORD, TOKEN]
VERBOSITIES: tuple[list[str], ...] = (["-q"], [], ["-v"])


# --- the end-to-end sweep ---------------------------------------------------------


@pytest.fixture(scope="module")
def module_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("security")
    with sprites_world(
        base,
        sandbox=SANDBOX,
        data={"forward_secrets": "ANTHROPIC_API_KEY,OPENAI_API_KEY"},
    ) as world:
        render = world.project.render
        (render / "secrets.env").write_text(f"OPENAI_API_KEY='{FILE_KEY}'\n")
        # Known before the first up, so that the sampler looks for it from the start.
        config.store_password("sprites", None, SANDBOX, PASSWORD)
        world.extra.update(tui_dir=fake_tui(base), outputs=[], spawn_ids=[])
        sampler = ArgvSampler(SECRETS).start()
        world.extra["sampler"] = sampler
        try:
            yield world
        finally:
            sampler.stop()
            TALLY["security: argv sampling rounds"] += sampler.rounds
            TALLY["security: leaks found"] += len(sampler.leaks)


@pytest.fixture
def world(module_world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    return enter(module_world, monkeypatch)


def run(
    world: World, *args: str, expect: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """af-remote with SPRITE_TOKEN in its environment; output kept for the sweep."""
    result = af(world.project.root, *args, env={"SPRITE_TOKEN": TOKEN, **(env or {})})
    world.extra["outputs"].append((args, result.stdout + result.stderr))
    TALLY["security: command runs checked"] += 1
    assert result.returncode == expect, (args, result.stdout, result.stderr)
    assert_clean(f"output of af-remote {' '.join(args)}", result.stdout, result.stderr)
    return result


def attach_env(world: World, out: Path) -> dict[str, str]:
    return {
        "PATH": f"{world.extra['tui_dir']}{os.pathsep}{os.environ['PATH']}",
        "AF_TEST_TUI_OUT": str(out),
    }


def assert_clean(where: str, *texts: str) -> None:
    for secret in SECRETS:
        for text in texts:
            if secret in text:
                TALLY["security: leaks found"] += 1
                raise AssertionError(f"a secret leaked into {where}: {text[:2000]}")


def records_text(world: World) -> str:
    return "".join(
        path.read_text() for path in sorted(world.registry_dir.glob("*.json"))
    )


def spawns(world: World) -> dict[str, dict[str, object]]:
    document = json.loads((world.registry_dir / "remote_spawns.json").read_text())
    return {record["spawn_id"]: record for record in document["records"]}


def project_text(world: World) -> str:
    """Every file of the project but the user's own secrets.env, .git included."""
    user_secrets = world.project.render / "secrets.env"
    return "".join(
        path.read_bytes().decode(errors="replace")
        for path in sorted(world.project.root.rglob("*"))
        if path.is_file() and path != user_secrets
    )


@pytest.mark.e2e
def test_every_command_at_every_verbosity_on_success(world: World) -> None:
    first = json.loads(run(world, "up", "-q", "--json", "--prompt", "first").stdout)
    assert first["state"] == "running"
    root = world.project.root
    for flags in VERBOSITIES:
        again = json.loads(run(world, "up", *flags, "--json").stdout)
        assert again["spawn_id"] == first["spawn_id"] and again["changed"] is False
        run(world, "ls", *flags, "--all")
        run(world, "ls", *flags, "--json")
        status = json.loads(run(world, "status", *flags, "--json").stdout)
        assert status["server"]["healthy"] is True
        run(world, "status", *flags)
        out = root.parent / f"tui-{len(flags)}-{flags}.json"
        run(world, "attach", *flags, env=attach_env(world, out))
        # The TUI reached the server through the proxy with the password it was
        # given in its environment.
        assert json.loads(out.read_text())["healthy"] is True
    second = json.loads(run(world, "up", "-v", "--json", "--prompt", "second").stdout)
    run(world, "down", "-v", second["spawn_id"])
    run(world, "update", "-v")
    scratch = root.parent / "fresh"
    scratch.mkdir()
    for flags in VERBOSITIES:
        init = af(
            scratch,
            "init",
            *flags,
            "--provider",
            "sprites",
            "--defaults",
            "--force",
            env={"SPRITE_TOKEN": TOKEN, "OPENAI_API_KEY": FILE_KEY},
        )
        assert init.returncode == 0, init.stderr
        assert_clean("init output", init.stdout, init.stderr)
    world.extra["spawn_ids"] += [first["spawn_id"], second["spawn_id"]]

    assert_clean("the records", records_text(world))
    assert_clean("the project's files", project_text(world))
    assert_clean(
        "a fresh render", *(p.read_text() for p in scratch.rglob("*") if p.is_file())
    )
    assert_clean(
        "the stand-in's invocation log", json.dumps(world.standin.invocations())
    )
    assert_private_files(world, [first["spawn_id"], second["spawn_id"]])
    sampler: ArgvSampler = world.extra["sampler"]
    assert sampler.rounds > 20 and sampler.leaks == []


def assert_private_files(world: World, spawn_ids: list[str]) -> None:
    """Secret files are 0600 here and in the sprite; no upload is left in /tmp."""

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(config.password_path("sprites", None, SANDBOX)) == 0o600
    assert mode(config.password_path("sprites", None, SANDBOX).parent) == 0o700
    for path in world.registry_dir.glob("*.json"):
        assert mode(path) == 0o600, path
    home = world.standin.home(SANDBOX) / ".af-remote"
    assert mode(home) == 0o700
    for name in ("secrets.env", "curl.conf", "server.env", "opencode.json"):
        assert mode(home / name) == 0o600, name
    assert PASSWORD in (home / "secrets.env").read_text()
    for spawn_id in spawn_ids:
        incoming = home / "incoming" / spawn_id
        assert not (incoming / "secrets.env").exists()
        assert all(mode(path) == 0o600 for path in incoming.iterdir())
        # The stand-in's /tmp is this machine's: the uploads were moved out of it.
        assert list(Path("/tmp").glob(f"af-remote.{spawn_id}.*")) == []
    # The user's own secrets file stays out of git.
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", ".af-remote/sprites/secrets.env"],
        cwd=world.project.root,
        check=False,
    )
    assert ignored.returncode == 0


LEAKY_STEP = """
install_opencode() {
  step "installing opencode (a registry that echoes credentials)"
  # shellcheck source=/dev/null
  source "$ROOT/secrets.env"
  echo "npm ERR! 401 for key $ANTHROPIC_API_KEY and $OPENAI_API_KEY" >&2
  echo "npm stdout $OPENCODE_SERVER_PASSWORD"
  fail "npm refused $ANTHROPIC_API_KEY"
}
"""


@pytest.mark.e2e
def test_every_command_at_every_verbosity_on_failure(world: World) -> None:
    root = world.project.root
    bootstrap = world.project.render / "bootstrap.sh"
    original = bootstrap.read_bytes()
    bootstrap.write_text(
        original.decode().replace('\nmain "$@"\n', LEAKY_STEP + '\nmain "$@"\n')
    )
    try:
        for flags in VERBOSITIES:
            failed = run(world, "up", *flags, "--prompt", "leak", expect=1)
            line = failed.stderr.strip().splitlines()[-1]
            assert line.startswith("af-remote: error: bootstrap failed: npm refused")
            assert redact.MASK in line
            assert "sprite exec -s af-sec" in line
            if flags == ["-v"]:
                # The output was logged, masked.
                assert f"npm ERR! 401 for key {redact.MASK} and" in failed.stderr
    finally:
        bootstrap.write_bytes(original)
    failures = [s for s in spawns(world).values() if s["state"] == "failed"]
    assert len(failures) == 3
    assert all(f"npm refused {redact.MASK}" in str(s["last_error"]) for s in failures)

    # The sprite CLI's own errors may carry the token it was given.
    world.standin.set_fault(
        "create",
        stderr="Error creating sprite: failed to create sprite (status 401): "
        f"token {TOKEN} is not valid",
        times=3,
    )
    for flags in VERBOSITIES:
        refused = run(
            world, "up", *flags, "--name", "af-sec-b", "--prompt", "x", expect=1
        )
        assert f"token {redact.MASK} is not valid" in refused.stderr
    world.standin.set_fault(
        "exec", stderr=f"Error: connection lost: {TOKEN} {PASSWORD}", times=6
    )
    for flags in VERBOSITIES:
        run(world, "status", *flags)
        run(world, "status", *flags, "--json")
    world.standin.set_fault("proxy", stderr=f"Error: proxy refused {TOKEN}", times=3)
    out = root.parent / "tui-failed.json"
    for flags in VERBOSITIES:
        run(world, "attach", *flags, env=attach_env(world, out), expect=1)
    assert not out.exists()
    world.standin.set_fault(
        "exec", stderr=f"Error: abort refused for {TOKEN} {PASSWORD}", times=3
    )
    first = world.extra["spawn_ids"][0]
    for flags in VERBOSITIES:
        run(world, "down", *flags, first, expect=1)
    world.standin.clear_faults()
    run(world, "down", "-v", "--destroy")

    assert_clean("the records", records_text(world))
    assert_clean("the project's files", project_text(world))
    assert_clean(
        "the stand-in's invocation log", json.dumps(world.standin.invocations())
    )
    sampler: ArgvSampler = world.extra["sampler"]
    assert sampler.leaks == []


def test_the_argv_sampler_sees_a_secret_in_argv() -> None:
    """The sweep's argv check is real: a process with a secret in its argv is seen."""
    canary = "canary-af-remote-5f0e1d"
    sampler = ArgvSampler([canary]).start()
    try:
        subprocess.run(
            [sys.executable, "-c", "import time; time.sleep(0.5)", canary], check=True
        )
    finally:
        sampler.stop()
    assert sampler.leaks and canary in sampler.leaks[0]


# --- the output layer ------------------------------------------------------------

# Secrets with characters JSON escapes: a redaction applied after json.dumps would
# look for the raw text and miss the escaped one.
# The "k9" start appears in no fixed text of the test (nor in the mask), so a match
# can only be the secret itself.
SECRET_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), min_size=2, max_size=24
).map(lambda text: "k9" + text)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(secret=SECRET_TEXT)
def test_no_output_channel_shows_a_registered_secret(
    secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    TALLY["security: secret values tried on the output layer"] += 1
    redact.clear()
    redact.add_secret(secret)
    ui.configure(verbose=True, quiet=False)
    try:
        ui.out_json({"last_error": f"refused {secret}!", "nested": [secret]})
        ui.out(f"result {secret}")
        ui.error(f"failed with {secret}")
        ui.progress(f"step {secret}")
        ui.log.debug("  | %s", secret)
        captured = capsys.readouterr()
    finally:
        redact.clear()
    escaped = json.dumps(secret)[1:-1]
    for text in (captured.out, captured.err):
        assert secret not in text
        assert escaped not in text
        assert json.dumps(secret, ensure_ascii=False)[1:-1] not in text
    assert json.loads(captured.out.split("\n}\n")[0] + "\n}")["nested"] == [redact.MASK]


def test_a_provider_token_in_the_environment_is_never_shown(
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from af_remote import listing
    from af_remote.errors import AfRemoteError

    def ls(*, show_all: bool, as_json: bool) -> int:
        raise AfRemoteError(f"sprite said: invalid token {TOKEN}")

    monkeypatch.setenv("SPRITE_TOKEN", TOKEN)
    monkeypatch.setattr(listing, "ls", ls)
    for flags in VERBOSITIES:
        result = run_cli("ls", *flags, cwd=tmp_path)
        assert result.exit_code == 1
        assert TOKEN not in result.stderr
        assert f"invalid token {redact.MASK}" in result.stderr


# --- exposure ---------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _fake_opencode(path: Path, sentinel: Path) -> None:
    """An `opencode serve` that notes it ran and whether it had a password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%s' \"${{OPENCODE_SERVER_PASSWORD:+with-password}}\" >{sentinel}\n"
        'port=$3\nexec python3 -c "import socket, time\n'
        "s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(); "
        'time.sleep(2)"\n'
    )
    path.chmod(0o755)


NO_PASSWORD = [
    pytest.param("export ANTHROPIC_API_KEY='k'\n", id="not-set"),
    pytest.param("export OPENCODE_SERVER_PASSWORD=''\n", id="empty"),
    pytest.param(None, id="no-secrets-file"),
]


def _server_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("secrets_env", NO_PASSWORD)
def test_the_sprites_server_never_starts_without_a_password(
    tmp_path: Path, secrets_env: str | None
) -> None:
    home = tmp_path / "home"
    root = home / ".af-remote"
    (root / "worktrees").mkdir(parents=True)
    sentinel = tmp_path / "started"
    _fake_opencode(root / "opencode" / "bin" / "opencode", sentinel)
    if secrets_env is not None:
        (root / "secrets.env").write_text(secrets_env)
    port = _server_port()
    serve = project.template("sprites") / "serve.sh"
    clean = {"HOME": str(home), "PATH": os.environ["PATH"]}
    TALLY["exposure: servers refused without a password"] += 1

    result = subprocess.run(
        ["bash", str(serve), str(port)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )

    assert result.returncode != 0
    if secrets_env is not None:
        assert "refusing to serve without it" in result.stderr
    assert not sentinel.exists() and not _listening(port)

    # The same script with a password does start the server (the check is real).
    (root / "secrets.env").write_text("export OPENCODE_SERVER_PASSWORD='pw-1234'\n")
    started = subprocess.run(
        ["bash", str(serve), str(port)], env=clean, timeout=20, check=False
    )
    assert started.returncode == 0 and sentinel.read_text() == "with-password"


@pytest.mark.parametrize("secrets_env", NO_PASSWORD)
def test_the_local_server_never_starts_without_a_password(
    tmp_path: Path, secrets_env: str | None
) -> None:
    root = tmp_path / "sandbox"
    (root / "worktrees").mkdir(parents=True)
    sentinel = tmp_path / "started"
    fake = tmp_path / "bin" / "opencode"
    _fake_opencode(fake, sentinel)
    if secrets_env is not None:
        (root / "secrets.env").write_text(secrets_env)
    port = _server_port()
    serve = project.template("local") / "serve.sh"
    clean = {"PATH": os.environ["PATH"], "AF_OPENCODE_BIN": str(fake)}
    TALLY["exposure: servers refused without a password"] += 1

    result = subprocess.run(
        ["bash", str(serve), "start", str(root), str(port)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )

    assert result.returncode != 0
    if secrets_env is not None:
        assert "refusing to serve without it" in result.stderr
    time.sleep(0.3)  # a server started in the background would be up by now
    assert not sentinel.exists() and not _listening(port)
    status = subprocess.run(
        ["bash", str(serve), "status", str(root)],
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (status.returncode, status.stdout) == (3, "stopped\n")

    (root / "secrets.env").write_text("export OPENCODE_SERVER_PASSWORD='pw-1234'\n")
    subprocess.run(
        ["bash", str(serve), "start", str(root), str(port)],
        env=clean,
        capture_output=True,
        timeout=20,
        check=True,
    )
    deadline = time.monotonic() + 10
    while not sentinel.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sentinel.read_text() == "with-password"
    subprocess.run(
        ["bash", str(serve), "stop", str(root)],
        env=clean,
        capture_output=True,
        check=True,
    )


@pytest.fixture
def sprites_render(run_cli: RunCli, scratch_repo: Path) -> Path:
    result = run_cli("init", "--provider", "sprites", "--defaults", cwd=scratch_repo)
    assert result.exit_code == 0, result.stderr
    return scratch_repo / ".af-remote" / "sprites"


@pytest.mark.parametrize(
    ("url_auth", "expected"),
    [
        (None, []),
        ("sprite", []),
        ("public", ["sprite config update -s af-my-project --url-auth public"]),
    ],
)
def test_dry_run_shows_url_access_changes_only_when_asked(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    url_auth: str | None,
    expected: list[str],
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_API_KEY)
    if url_auth is not None:
        monkeypatch.setenv("AF_REMOTE_URL_AUTH", url_auth)
    assert "AF_REMOTE_URL_AUTH='sprite'" in (sprites_render / ".env").read_text()

    result = run_cli("up", "--dry-run", "--json", "--prompt", "x", cwd=scratch_repo)

    assert result.exit_code == 0, result.stderr
    commands = json.loads(result.stdout)["commands"]
    assert commands[0] == "sprite create --skip-console af-my-project"
    assert commands[1:-1] == expected
    assert commands[-1].startswith("sprite exec -s af-my-project ")
    assert FAKE_API_KEY not in result.stdout + result.stderr
