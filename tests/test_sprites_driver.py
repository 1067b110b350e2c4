"""The Sprites driver: exact `sprite` argv, and each documented failure turned into
the right outcome. The CLI is faked with pytest-subprocess; nothing reaches a network.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

# plumbum binds subprocess.Popen (and asks `uname -p`) when first imported: that must
# happen before any test fakes processes, or it would keep the fake for good.
from pytest_subprocess import FakeProcess

from af_remote import sprites, ui
from af_remote.errors import AfRemoteError, NativeCommandError
from af_remote.protocol import MARK
from af_remote.sprites import Sprite

NAME = "af-my-project"
ORG = "acme-inc"
NOT_LOGGED_IN = (
    "Error: authentication failed: no authentication found. "
    "Please run 'sprite login' first",
    "no organizations configured. Run 'sprite login' to authenticate",
)


@pytest.fixture
def sprite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `sprite` on the PATH af-remote's runner searches; running it for real fails.

    The runner resolves the program before starting it, so the faked calls carry the
    resolved path as argv[0].
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "sprite"
    program.write_text("#!/bin/sh\necho 'the real sprite must not run' >&2\nexit 99\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return str(program)


def fake(
    fp: FakeProcess,
    sprite: str,
    argv: list[str],
    *,
    stdout: str | list[str] = "",
    stderr: str = "",
    returncode: int = 0,
) -> None:
    """Expect exactly ``argv`` (which starts with ``sprite``) once."""
    assert argv[0] == "sprite"
    fp.register(
        [sprite, *argv[1:]], stdout=stdout, stderr=stderr, returncode=returncode
    )


EXEC_PREFIX = ["sprite", "exec", "-s", NAME]


def create_failure(status: int, body: str) -> str:
    return f"Error creating sprite: failed to create sprite (status {status}): {body}\n"


# --- argv ------------------------------------------------------------------------


def test_argv_builders_without_org() -> None:
    sprite = Sprite(NAME)
    assert sprite.create_argv() == ["sprite", "create", "--skip-console", NAME]
    assert sprite.destroy_argv() == ["sprite", "destroy", "--force", NAME]
    assert sprite.list_argv() == ["sprite", "list", "--prefix", NAME]
    assert sprite.proxy_argv(41234, 8080) == [
        "sprite",
        "proxy",
        "-s",
        NAME,
        "41234:8080",
    ]
    assert sprite.console_argv() == ["sprite", "console", "-s", NAME]
    assert sprite.exec_argv(["true"]) == ["sprite", "exec", "-s", NAME, "--", "true"]


def test_argv_builders_with_org() -> None:
    sprite = Sprite(NAME, ORG)
    assert sprite.create_argv() == [
        "sprite",
        "create",
        "-o",
        ORG,
        "--skip-console",
        NAME,
    ]
    assert sprite.destroy_argv() == ["sprite", "destroy", "-o", ORG, "--force", NAME]
    assert sprite.list_argv() == ["sprite", "list", "-o", ORG, "--prefix", NAME]
    assert sprite.proxy_argv(5000, 9090) == [
        "sprite",
        "proxy",
        "-s",
        NAME,
        "-o",
        ORG,
        "5000:9090",
    ]
    assert sprite.console_argv() == ["sprite", "console", "-s", NAME, "-o", ORG]


def test_exec_argv_puts_selection_and_uploads_before_the_remote_command() -> None:
    remote = ["bash", "-s", "-o", "--", "x y"]  # tokens that look like our flags
    uploads = [
        (Path("/tmp/a b/bootstrap.sh"), "/tmp/af-remote.spw_1.bootstrap.sh"),
        (Path("/tmp/s/secrets.env"), "/tmp/af-remote.spw_1.secrets.env"),
    ]
    argv = Sprite(NAME, ORG).exec_argv(remote, uploads)
    assert argv == [
        "sprite",
        "exec",
        "-s",
        NAME,
        "-o",
        ORG,
        "--file",
        "/tmp/a b/bootstrap.sh:/tmp/af-remote.spw_1.bootstrap.sh",
        "--file",
        "/tmp/s/secrets.env:/tmp/af-remote.spw_1.secrets.env",
        "--",
        *remote,
    ]


def test_create_runs_the_exact_argv(fp: FakeProcess, sprite_path: str) -> None:
    fake(fp, sprite_path, ["sprite", "create", "--skip-console", NAME])
    assert Sprite(NAME).create() is True

    fake(fp, sprite_path, ["sprite", "create", "-o", ORG, "--skip-console", NAME])
    assert Sprite(NAME, ORG).create() is True
    assert len(fp.calls) == 2


def test_exec_runs_the_exact_argv_and_passes_the_exit_code_through(
    fp: FakeProcess, sprite_path: str
) -> None:
    argv = ["sprite", "exec", "-s", NAME, "-o", ORG, "--", "ls", "-s", "/"]
    fake(fp, sprite_path, argv, stdout="bin\netc\n", stderr="warn\n", returncode=7)
    result = Sprite(NAME, ORG).exec(["ls", "-s", "/"])
    assert (result.returncode, result.stdout, result.stderr) == (
        7,
        "bin\netc\n",
        "warn\n",
    )
    assert result.argv == argv


def test_stream_uploads_files_and_hands_over_each_line(
    fp: FakeProcess, sprite_path: str, tmp_path: Path
) -> None:
    script = tmp_path / "bootstrap.sh"
    script.write_text("echo hi\n")
    remote = "/tmp/af-remote.spw_x.bootstrap.sh"
    fake(
        fp,
        sprite_path,
        [*EXEC_PREFIX, "--file", f"{script}:{remote}", "--", "bash", remote],
        stdout=["Connecting to sprite...", f"{MARK} step 1/2 hello", "done"],
        returncode=3,
    )
    lines: list[str] = []
    result = Sprite(NAME).stream(["bash", remote], [(script, remote)], lines.append)
    assert lines == ["Connecting to sprite...", f"{MARK} step 1/2 hello", "done"]
    assert result.returncode == 3


def test_destroy_runs_the_exact_argv(fp: FakeProcess, sprite_path: str) -> None:
    fake(fp, sprite_path, ["sprite", "destroy", "-o", ORG, "--force", NAME])
    assert Sprite(NAME, ORG).destroy() is True


# --- documented failures -----------------------------------------------------------


@pytest.mark.parametrize("stderr", NOT_LOGGED_IN)
@pytest.mark.parametrize("command", ["create", "exec", "destroy"])
def test_not_logged_in_says_so_and_names_sprite_login(
    fp: FakeProcess, sprite_path: str, stderr: str, command: str
) -> None:
    sprite = Sprite(NAME)
    argv = {
        "create": sprite.create_argv(),
        "exec": sprite.exec_argv(["true"]),
        "destroy": sprite.destroy_argv(),
    }[command]
    fake(fp, sprite_path, argv, stderr=f"{stderr}\n", returncode=1)
    with pytest.raises(NativeCommandError) as caught:
        {"create": sprite.create, "exec": lambda: sprite.exec(["true"])}.get(
            command, sprite.destroy
        )()
    assert "not logged in" in caught.value.message
    assert caught.value.hint is not None
    assert "`sprite login`" in caught.value.hint
    assert caught.value.returncode == 1
    assert len(fp.calls) == 1  # no fallback `sprite list` on an account error


def test_create_rate_limited_says_when_to_retry(
    fp: FakeProcess, sprite_path: str
) -> None:
    body = '{"error":"sprite_creation_rate_limited","retry_after_seconds":30}'
    fake(
        fp,
        sprite_path,
        Sprite(NAME).create_argv(),
        stderr=create_failure(429, body),
        returncode=1,
    )
    with pytest.raises(NativeCommandError) as caught:
        Sprite(NAME).create()
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("retry in 30 s")
    assert "rate limited" in caught.value.message


@pytest.mark.parametrize(
    ("body", "wait"),
    [
        (
            '{"error":"concurrent_sprite_limit_exceeded","retry_after_seconds":12}',
            "12 s",
        ),
        ('{"error":"concurrent_sprite_limit_exceeded"}', "a minute"),
    ],
)
def test_create_over_the_concurrent_limit_suggests_destroying_one(
    fp: FakeProcess, sprite_path: str, body: str, wait: str
) -> None:
    fake(
        fp,
        sprite_path,
        Sprite(NAME).create_argv(),
        stderr=create_failure(429, body),
        returncode=1,
    )
    with pytest.raises(NativeCommandError) as caught:
        Sprite(NAME).create()
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(f"retry in {wait}, or destroy an idle sprite")
    assert "too many running sprites" in caught.value.message


def test_create_of_a_taken_name_adopts_it(fp: FakeProcess, sprite_path: str) -> None:
    fake(
        fp,
        sprite_path,
        Sprite(NAME).create_argv(),
        stderr=create_failure(409, '{"error":"name already taken"}'),
        returncode=1,
    )
    assert Sprite(NAME).create() is False
    assert len(fp.calls) == 1  # a 409 needs no `sprite list` to be sure


@pytest.mark.parametrize("org", [None, ORG])
def test_create_with_an_unknown_400_adopts_a_listed_sprite(
    fp: FakeProcess, sprite_path: str, org: str | None
) -> None:
    sprite = Sprite(NAME, org)
    fake(
        fp,
        sprite_path,
        sprite.create_argv(),
        stderr=create_failure(400, '{"error":"invalid request"}'),
        returncode=1,
    )
    listing = ["sprite", "list", *(["-o", org] if org else []), "--prefix", NAME]
    fake(fp, sprite_path, listing, stdout=f"{NAME}\n{NAME}-2\n")
    assert sprite.create() is False
    assert fp.calls[-1] == [sprite_path, *listing[1:]]


@pytest.mark.parametrize(
    ("listed", "returncode"),
    [(f"{NAME}-2\n{NAME}x\n", 0), ("", 0), (f"{NAME}\n", 1)],
    ids=["only-longer-names", "empty", "list-failed"],
)
def test_create_with_an_unknown_400_fails_when_not_listed(
    fp: FakeProcess, sprite_path: str, listed: str, returncode: int
) -> None:
    fake(
        fp,
        sprite_path,
        Sprite(NAME).create_argv(),
        stderr=create_failure(400, '{"error":"invalid request"}'),
        returncode=1,
    )
    fake(
        fp,
        sprite_path,
        ["sprite", "list", "--prefix", NAME],
        stdout=listed,
        returncode=returncode,
    )
    with pytest.raises(NativeCommandError) as caught:
        Sprite(NAME).create()
    assert caught.value.message.startswith(f"could not create sprite {NAME} (exit 1)")
    assert "invalid request" in caught.value.message


@pytest.mark.parametrize(
    "stderr",
    [
        "Error: sprite not found\n",
        "Error: failed to destroy sprite (status 404): {}\n",
    ],
)
def test_destroy_of_a_missing_sprite_is_not_an_error(
    fp: FakeProcess, sprite_path: str, stderr: str
) -> None:
    fake(fp, sprite_path, Sprite(NAME).destroy_argv(), stderr=stderr, returncode=1)
    assert Sprite(NAME).destroy() is False


def test_destroy_failing_otherwise_raises(fp: FakeProcess, sprite_path: str) -> None:
    fake(
        fp,
        sprite_path,
        Sprite(NAME).destroy_argv(),
        stderr="Error: failed to destroy sprite (status 500): internal\n",
        returncode=1,
    )
    with pytest.raises(NativeCommandError) as caught:
        Sprite(NAME).destroy()
    assert caught.value.message.startswith(f"could not destroy sprite {NAME}")
    assert caught.value.argv == ["sprite", "destroy", "--force", NAME]


def test_exec_passes_a_remote_authentication_failure_through(
    fp: FakeProcess, sprite_path: str
) -> None:
    remote = ["git", "clone", "https://example.com/private.git"]
    fake(
        fp,
        sprite_path,
        Sprite(NAME).exec_argv(remote),
        stderr="fatal: Authentication failed for 'https://example.com/private.git/'\n",
        returncode=128,
    )
    assert Sprite(NAME).exec(remote).returncode == 128


def test_missing_sprite_cli_is_named(
    fp: FakeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(AfRemoteError) as caught:
        Sprite(NAME).create()
    assert caught.value.message == "`sprite` is not on PATH"
    assert caught.value.hint == sprites.MISSING_HINT
    assert len(fp.calls) == 0


# --- the server password ------------------------------------------------------------


def password_argv(sprite: Sprite) -> list[str]:
    return sprite.exec_argv(
        [
            "sed",
            "-n",
            f's/^user = "opencode:\\(.*\\)"$/{MARK} password \\1/p',
            f"{sprites.ROOT}/curl.conf",
        ]
    )


def test_the_password_command_prints_one_marked_line_for_the_bootstrap_format(
    tmp_path: Path,
) -> None:
    # The remote half of fetch_password, run for real on a curl.conf written the way
    # bootstrap.sh writes it.
    password = "Zq-8_kP0aXv"
    conf = tmp_path / "curl.conf"
    conf.write_text(
        f'silent\nuser = "opencode:{password}"\nmax-time = 30\n', encoding="utf-8"
    )
    remote = password_argv(Sprite(NAME))
    remote = remote[remote.index("--") + 1 :]
    remote[-1] = str(conf)
    output = subprocess.run(remote, capture_output=True, text=True, check=True).stdout
    assert output == f"{MARK} password {password}\n"


def test_fetch_password_reads_only_its_marked_line_and_never_logs_it(
    fp: FakeProcess,
    sprite_path: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "pw-Kx81_j2WqLr0ZxYt"
    sprite = Sprite(NAME, ORG)
    argv = password_argv(sprite)
    fake(
        fp,
        sprite_path,
        argv,
        stdout=(
            f"Connecting to {NAME}...\n"
            f"Running: {' '.join(argv[argv.index('--') + 1 :])}\n"
            f"{MARK} step not-a-password\n"
            f"{MARK} password {password}\n"
            "password decoy\n"
        ),
    )
    monkeypatch.setattr(ui.log, "propagate", True)
    with caplog.at_level(logging.DEBUG, logger="af_remote"):
        assert sprite.fetch_password() == password
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"$ sprite exec -s {NAME} -o {ORG}" in logged  # the capture works
    assert password not in logged
    assert "Connecting" not in logged  # no line of a secret output is logged


def test_fetch_password_without_a_marked_line_is_an_error(
    fp: FakeProcess, sprite_path: str
) -> None:
    fake(
        fp,
        sprite_path,
        password_argv(Sprite(NAME)),
        stdout=f"Connecting to {NAME}...\nRunning: sed ... {MARK} password \\1/p\n",
    )
    with pytest.raises(AfRemoteError) as caught:
        Sprite(NAME).fetch_password()
    assert (
        caught.value.message == f"could not read the server password from sprite {NAME}"
    )


# --- the runner under the driver ---------------------------------------------------


def test_native_commands_see_the_environment_as_it_is_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from af_remote import native

    native.run(["true"])  # plumbum is loaded and has taken its copy by now
    monkeypatch.setenv("AF_PROBE_VALUE", "set after start-up")
    result = native.run(["bash", "-c", 'printf %s "${AF_PROBE_VALUE-unset}"'])
    assert result.stdout == "set after start-up"
