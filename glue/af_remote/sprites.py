"""The Sprites provider: drives the ``sprite`` CLI (see docs/providers.md).

Every command carries ``-s NAME`` (and ``-o ORG`` when configured): without them
the CLI falls back to a ``.sprite`` file or an interactive prompt, which fails
without a terminal. Remote commands never contain ``-s``/``-o`` tokens of ours
after ``--`` (old CLIs scanned every argument), and never a secret: secrets travel
as uploaded files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from af_remote import native
from af_remote.errors import AfRemoteError
from af_remote.native import Result
from af_remote.protocol import MARK

SPRITE = "sprite"
HOME = "/home/sprite"
ROOT = f"{HOME}/.af-remote"
UPLOAD_DIR = "/tmp"  # noqa: S108 (inside the sprite, which is ours alone)
UPLOAD_LIMIT = 20 * 1024 * 1024  # larger uploads have failed with HTTP 502
MISSING_HINT = "install the sprite CLI (see the Sprites docs), then run `sprite login`"

# Only the CLI's own wording: a remote command's output (say a `git clone` that
# fails with "Authentication failed") must not pass for an account problem.
_NOT_LOGGED_IN = re.compile(
    r"authentication failed: no authentication found|no organizations configured",
    re.IGNORECASE,
)
_RATE_LIMITED = re.compile(
    r"\(status 429\)|sprite_creation_rate_limited|concurrent_sprite_limit_exceeded",
    re.IGNORECASE,
)
_RETRY_AFTER = re.compile(r"retry_after_seconds\"?\s*[:=]\s*(\d+)")
_DUPLICATE = re.compile(r"status 409|already exists|already taken|duplicate", re.I)
_NOT_FOUND = re.compile(r"not found|status 404|no such sprite|does not exist", re.I)


@dataclass(frozen=True)
class Sprite:
    """One sprite, addressed by name (and org)."""

    name: str
    org: str | None = None

    def flags(self) -> list[str]:
        return ["-s", self.name] + (["-o", self.org] if self.org else [])

    # argv builders: one place for each native command, used for running it, for
    # --dry-run and for the "next commands" af-remote prints.
    def create_argv(self) -> list[str]:
        org = ["-o", self.org] if self.org else []
        return [SPRITE, "create", *org, "--skip-console", self.name]

    def exec_argv(
        self, command: Sequence[str], uploads: Sequence[tuple[Path, str]] = ()
    ) -> list[str]:
        files = [
            arg for local, remote in uploads for arg in ("--file", f"{local}:{remote}")
        ]
        return [SPRITE, "exec", *self.flags(), *files, "--", *command]

    def destroy_argv(self) -> list[str]:
        org = ["-o", self.org] if self.org else []
        return [SPRITE, "destroy", *org, "--force", self.name]

    def list_argv(self) -> list[str]:
        org = ["-o", self.org] if self.org else []
        return [SPRITE, "list", *org, "--prefix", self.name]

    def proxy_argv(self, local_port: int, remote_port: int) -> list[str]:
        return [SPRITE, "proxy", *self.flags(), f"{local_port}:{remote_port}"]

    def console_argv(self) -> list[str]:
        return [SPRITE, "console", *self.flags()]

    def url_auth_argv(self, auth: str, *, old_cli: bool = False) -> list[str]:
        if old_cli:
            return [SPRITE, "url", "update", *self.flags(), "--auth", auth]
        return [SPRITE, "config", "update", *self.flags(), "--url-auth", auth]

    # running them
    def create(self) -> bool:
        """Create the sprite; False when it already exists (it is then adopted)."""
        result = native.run(self.create_argv(), check=False, missing_hint=MISSING_HINT)
        if result.returncode == 0:
            return True
        text = result.stderr + result.stdout
        raise_for_account(result)
        if _DUPLICATE.search(text) or self._listed():
            return False
        raise native.failure(result, f"could not create sprite {self.name}")

    def exec(self, command: Sequence[str]) -> Result:
        result = native.run(
            self.exec_argv(command), check=False, missing_hint=MISSING_HINT
        )
        _raise_for_account_on_exec(result)
        return result

    def stream(
        self,
        command: Sequence[str],
        uploads: Sequence[tuple[Path, str]],
        on_line: Callable[[str], None],
    ) -> Result:
        result = native.stream(
            self.exec_argv(command, uploads), on_line, missing_hint=MISSING_HINT
        )
        _raise_for_account_on_exec(result)
        return result

    def destroy(self) -> bool:
        """Destroy the sprite; False when it was already gone."""
        result = native.run(self.destroy_argv(), check=False, missing_hint=MISSING_HINT)
        if result.returncode == 0:
            return True
        raise_for_account(result)
        if is_not_found(result):
            return False
        raise native.failure(result, f"could not destroy sprite {self.name}")

    def set_url_auth(self, auth: str) -> int:
        """Set who may open the sprite URL; returns the invocations it took.

        Newer CLIs spell it `config update --url-auth`, older ones `url update
        --auth`: the second is tried when the first is refused.
        """
        result = native.run(
            self.url_auth_argv(auth), check=False, missing_hint=MISSING_HINT
        )
        if result.returncode == 0:
            return 1
        raise_for_account(result)
        old = native.run(
            self.url_auth_argv(auth, old_cli=True),
            check=False,
            missing_hint=MISSING_HINT,
        )
        if old.returncode == 0:
            return 2
        raise native.failure(result, f"could not set URL access of {self.name}")

    def fetch_password(self) -> str:
        """The server password stored in the sprite (for a machine that lacks it)."""
        marked = f"{MARK} password "
        command = [
            "sed",
            "-n",
            f's/^user = "opencode:\\(.*\\)"$/{marked}\\1/p',
            f"{ROOT}/curl.conf",
        ]
        result = native.run(
            self.exec_argv(command),
            check=False,
            missing_hint=MISSING_HINT,
            secret_output=True,
        )
        _raise_for_account_on_exec(result)
        for line in result.stdout.splitlines():
            if line.startswith(marked) and line[len(marked) :].strip():
                return line[len(marked) :].strip()
        raise AfRemoteError(
            f"could not read the server password from sprite {self.name}",
            hint=f"has `af-remote up` run there? ({ROOT}/curl.conf)",
        )

    def _listed(self) -> bool:
        result = native.run(self.list_argv(), check=False, missing_hint=MISSING_HINT)
        return result.returncode == 0 and self.name in result.stdout.split()


def is_not_found(result: Result) -> bool:
    return result.returncode != 0 and bool(
        _NOT_FOUND.search(result.stderr + result.stdout)
    )


def _raise_for_account_on_exec(result: Result) -> None:
    """Account failures of ``exec``: the CLI exits 1; other codes are the remote's."""
    if result.returncode == 1:
        raise_for_account(result)


def raise_for_account(result: Result) -> None:
    """Turn the CLI's account-level failures into errors that say what to do."""
    if result.returncode == 0:
        return
    text = result.stderr + "\n" + result.stdout
    if _NOT_LOGGED_IN.search(text):
        raise native.failure(
            result,
            "the sprite CLI is not logged in",
            hint="run `sprite login`, or `sprite auth setup --token ...` on a machine "
            "without a browser",
        )
    if _RATE_LIMITED.search(text):
        retry = _RETRY_AFTER.search(text)
        wait = f"retry in {retry.group(1)} s" if retry else "retry in a minute"
        raise native.failure(
            result,
            "Sprites refused: rate limited or too many running sprites",
            hint=f"{wait}, or destroy an idle sprite (`sprite list`, "
            "`sprite destroy --force NAME`)",
        )


def check_upload_size(path: Path) -> None:
    from af_remote import ui

    size = path.stat().st_size
    if size > UPLOAD_LIMIT:
        raise AfRemoteError(
            f"{path.name} is {size / 2**20:.1f} MiB; uploads over 20 MiB fail",
            hint="set AF_REMOTE_SOURCE=clone and AF_REMOTE_SOURCE_URL in the render's "
            ".env to clone inside the sprite instead",
        )
    if size > UPLOAD_LIMIT * 0.75:
        ui.warn(
            f"{path.name} is {size / 2**20:.1f} MiB, near the ~20 MiB upload limit; "
            "consider AF_REMOTE_SOURCE=clone"
        )
