"""The `sprite` command of the stand-in: the documented CLI surface, run locally.

Each subcommand parses its flags the way the real (cobra-based) CLI does, strictly, and
reports failures as one `Error: ...` line on stderr with exit code 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from standin._common import (
    PACKAGE_DIR,
    SANDBOX_HOME,
    SANDBOX_PATH,
    Hold,
    SpriteState,
    StandinError,
    copy_tree,
    ensure_supervisor,
    env_float,
    locked,
    now_iso,
    read_json,
    root_dir,
    stop_supervisor,
    watch_owner_lock,
    write_json,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
UPLOAD_LIMIT_BYTES = 20 * 1024 * 1024
TRANSPORT_ERROR = (
    "Error: connection lost: websocket: close 1006 (abnormal closure): unexpected EOF"
)
NOT_LOGGED_IN = (
    "authentication failed: no authentication found. Please run 'sprite login' first"
)
NO_ORG = "no organizations configured. Run 'sprite login' to authenticate"
ALIASES = {"ls": "list", "x": "exec", "c": "console", "orgs": "org"}

USAGE = """\
Sprites CLI (local stand-in)

Usage:
  sprite [command]

Commands:
  login, logout, auth setup --token T, org list
  create [--skip-console] [--label L]... NAME
  list (ls) [--prefix P]
  destroy [--force] [NAME]
  use NAME | use --unset
  info, url, url update --auth public|sprite, config update --url-auth public|sprite
  exec (x) [--dir D] [--env K=v,...] [--file SRC:DEST]... [--tty]
           [--no-port-forward] -- CMD [ARGS...]
  console (c), sessions list
  proxy LOCAL:REMOTE... | PORT... | -W [host]:port
  checkpoint create [--comment T] | list | info vN | delete vN
  restore vN

Global flags:
  -o, --org NAME      organization
  -s, --sprite NAME   sprite
      --debug[=FILE]  debug output
  -h, --help          help
"""


class Globals:
    def __init__(self) -> None:
        self.org: str | None = None
        self.sprite: str | None = None
        self.debug: str | None = None
        self.help = False


# --- argument parsing ---------------------------------------------------------------


def split_globals(argv: list[str]) -> tuple[Globals, list[str], list[str] | None]:
    """Take the global flags out of argv, wherever they are before `--`."""
    g = Globals()
    rest: list[str] = []
    after: list[str] | None = None
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            after = argv[i + 1 :]
            break
        consumed = _take_global(g, argv, i)
        if consumed:
            i += consumed
            continue
        if token in ("-h", "--help"):
            g.help = True
        elif token == "--debug":
            g.debug = "-"
        elif token.startswith("--debug="):
            g.debug = token.split("=", 1)[1]
        else:
            rest.append(token)
        i += 1
    if (
        after is not None
        and os.environ.get("SPRITE_STANDIN_SCAN_AFTER_DASHDASH", "1") != "0"
    ):
        after = _old_scan(g, after)
    return g, rest, after


def _take_global(g: Globals, argv: list[str], i: int) -> int:
    """Consume -o/-s in any spelling at argv[i]; return how many tokens it used."""
    token = argv[i]
    for short, long, attr in (("-o", "--org", "org"), ("-s", "--sprite", "sprite")):
        if token in (short, long):
            if i + 1 >= len(argv):
                raise StandinError(f"flag needs an argument: {token}")
            setattr(g, attr, argv[i + 1])
            return 2
        if token.startswith(long + "="):
            setattr(g, attr, token.split("=", 1)[1])
            return 1
        if token.startswith(short) and len(token) > 2 and not token.startswith("--"):
            setattr(g, attr, token[2:].removeprefix("="))
            return 1
    return 0


def _old_scan(g: Globals, after: list[str]) -> list[str]:
    """Older CLI versions took -s/-o even after `--`, eating them from the command."""
    kept: list[str] = []
    i = 0
    while i < len(after):
        consumed = _take_global(g, after, i) if after[i].startswith("-") else 0
        if consumed:
            i += consumed
        else:
            kept.append(after[i])
            i += 1
    return kept


FlagSpec = dict[str, tuple[str, str]]  # flag -> (key, "bool" | "value" | "list")


def parse_flags(args: list[str], spec: FlagSpec) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {key: [] for key, kind in spec.values() if kind == "list"}
    positional: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-") or token == "-":
            positional.append(token)
            i += 1
            continue
        name, has_value, inline = token.partition("=")
        if name not in spec:
            if token.startswith("--"):
                raise StandinError(f"unknown flag: {name}")
            raise StandinError(f"unknown shorthand flag: '{token[1]}' in {token}")
        key, kind = spec[name]
        if kind == "bool":
            opts[key] = inline.lower() not in ("false", "0") if has_value else True
            i += 1
            continue
        if has_value:
            value = inline
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            raise StandinError(f"flag needs an argument: {name}")
        if kind == "list":
            opts[key].append(value)
        else:
            opts[key] = value
    return opts, positional


def _one_arg(positional: list[str], command: str) -> str:
    if len(positional) != 1:
        raise StandinError(
            f'"sprite {command}" accepts 1 arg(s), received {len(positional)}'
        )
    return positional[0]


# --- account, org and sprite resolution ---------------------------------------------


class Context:
    def __init__(self, g: Globals) -> None:
        self.g = g
        self.root = root_dir()

    def debug(self, message: str) -> None:
        if self.g.debug is None:
            return
        line = f"{now_iso()} DEBUG {message}\n"
        if self.g.debug == "-":
            sys.stderr.write(line)
        else:
            with open(self.g.debug, "a") as f:
                f.write(line)

    def ensure_auth(self) -> None:
        auth = read_json(self.root / "auth.json", {}) or {}
        if not auth.get("logged_in"):
            raise StandinError(NOT_LOGGED_IN)
        if not self.orgs():
            raise StandinError(NO_ORG)

    def orgs(self) -> list[str]:
        orgs_dir = self.root / "orgs"
        if not orgs_dir.is_dir():
            return []
        return sorted(p.name for p in orgs_dir.iterdir() if (p / "org.json").is_file())

    def org(self, wanted: str | None = None) -> str:
        self.ensure_auth()
        name = wanted or self.g.org
        if name:
            if name not in self.orgs():
                raise StandinError(f'organization "{name}" not found')
            return name
        current = (read_json(self.root / "auth.json", {}) or {}).get("current_org")
        return current if current in self.orgs() else self.orgs()[0]

    def org_id(self, org: str) -> str:
        return str(read_json(self.root / "orgs" / org / "org.json", {}).get("id", ""))

    def sprite(self, name: str | None = None) -> SpriteState:
        """Select a sprite: argument, -s, nearest .sprite file, else a TTY prompt."""
        self.ensure_auth()
        name = name or self.g.sprite
        org_hint = None
        if not name:
            found = find_dotsprite(Path.cwd())
            if found is not None:
                data = read_json(found, {}) or {}
                name = data.get("sprite")
                org_hint = data.get("organization")
                self.debug(f"using sprite {name} from {found}")
        if not name:
            name = self._prompt_for_sprite()
        state = SpriteState(self.root, self.org(self.g.org or org_hint), name)
        if not state.exists():
            raise StandinError(f'sprite "{name}" not found (status 404)')
        return state

    def _prompt_for_sprite(self) -> str:
        if not sys.stdin.isatty():
            raise StandinError(
                "no sprite selected and no .sprite file found; cannot prompt for one "
                "without a terminal (use -s NAME or 'sprite use NAME')"
            )
        sys.stderr.write("Select a sprite: ")
        sys.stderr.flush()
        return sys.stdin.readline().strip()

    def url(self, state: SpriteState) -> str:
        return f"https://{state.name}-{self.org_id(state.org)}.sprites.app/"


def find_dotsprite(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / ".sprite"
        if candidate.is_file():
            return candidate
    return None


# --- commands: account --------------------------------------------------------------


def cmd_login(ctx: Context, args: list[str], after: list[str] | None) -> int:
    parse_flags(args, {})
    raise StandinError(
        "sprite login opens a browser and needs a terminal; for automation use "
        "'sprite auth setup --token ORG/ORG_ID/TOKEN_ID/TOKEN'"
    )


def cmd_logout(ctx: Context, args: list[str], after: list[str] | None) -> int:
    parse_flags(args, {})
    with contextlib.suppress(FileNotFoundError):
        (ctx.root / "auth.json").unlink()
    print("✓ Logged out")
    return 0


def cmd_auth(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"--token": ("token", "value")})
    if positional != ["setup"] or not opts.get("token"):
        raise StandinError("usage: sprite auth setup --token ORG/ORG_ID/TOKEN_ID/TOKEN")
    parts = opts["token"].split("/")
    if len(parts) != 4 or not all(parts):
        raise StandinError("invalid token format: expected ORG/ORG_ID/TOKEN_ID/TOKEN")
    org, org_id = parts[0], parts[1]
    org_dir = ctx.root / "orgs" / org
    (org_dir / "sprites").mkdir(parents=True, exist_ok=True)
    write_json(org_dir / "org.json", {"name": org, "id": org_id})
    write_json(ctx.root / "auth.json", {"logged_in": True, "current_org": org})
    print(f"✓ Authenticated with organization {org}")
    return 0


def cmd_org(ctx: Context, args: list[str], after: list[str] | None) -> int:
    _, positional = parse_flags(args, {})
    if positional not in ([], ["list"]):
        raise StandinError(f'unknown command "{positional[0]}" for "sprite org"')
    ctx.ensure_auth()
    for org in ctx.orgs():
        print(org)
    return 0


# --- commands: lifecycle ------------------------------------------------------------


def cmd_create(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(
        args,
        {
            "--skip-console": ("skip_console", "bool"),
            "--label": ("labels", "list"),
            "-l": ("labels", "list"),
        },
    )
    name = (
        _one_arg(positional, "create")
        if positional or not ctx.g.sprite
        else ctx.g.sprite
    )
    org = ctx.org()
    print(f"Creating sprite {name}...", flush=True)
    if not DNS_LABEL.match(name):
        body = {"error": "invalid_name", "message": f"invalid sprite name: {name}"}
        raise StandinError(
            f"Error creating sprite: failed to create sprite (status 400): "
            f"{json.dumps(body)}",
            bare=True,
        )
    state = SpriteState(ctx.root, org, name)
    state.dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        state.dir.mkdir()
    except FileExistsError:
        body = {
            "error": "sprite_already_exists",
            "message": f"a sprite named {name} already exists",
        }
        raise StandinError(
            "Error creating sprite: failed to create sprite (status 409): "
            f"{json.dumps(body)}",
            bare=True,
        ) from None
    _build_sprite(ctx, state, opts["labels"])
    ensure_supervisor(state)
    print(f"✓ Sprite {name} created successfully!", flush=True)
    if not opts.get("skip_console"):
        return _console(ctx, state)
    return 0


def _build_sprite(ctx: Context, state: SpriteState, labels: list[str]) -> None:
    state.home.mkdir()
    for seed in read_json(ctx.root / "seed.json", []) or []:
        copy_tree(
            Path(seed["src"]),
            state.home / seed["dest"],
            hardlink=bool(seed.get("hardlink", True)),
        )
    runtime = state.runtime
    (runtime / "bin").mkdir(parents=True)
    (runtime / "logs" / "services").mkdir(parents=True)
    (runtime / "policy").mkdir()
    (runtime / "bin" / "sprite-env").symlink_to(PACKAGE_DIR / "bin" / "sprite-env")
    policy = runtime / "policy" / "network.json"
    policy.write_text(
        json.dumps({"rules": [{"action": "allow", "domain": "*"}]}) + "\n"
    )
    policy.chmod(0o444)
    state.checkpoints.mkdir()
    write_json(
        state.dir / "sprite.json",
        {
            "name": state.name,
            "id": "sprite-" + secrets.token_hex(8),
            "organization": state.org,
            "labels": labels,
            "url_auth": "sprite",
            "created_at": now_iso(),
        },
    )


def cmd_list(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"--prefix": ("prefix", "value")})
    if positional:
        raise StandinError(f'unknown command "{positional[0]}" for "sprite list"')
    org = ctx.org()
    sprites_dir = ctx.root / "orgs" / org / "sprites"
    names = (
        sorted(p.name for p in sprites_dir.iterdir() if (p / "sprite.json").is_file())
        if sprites_dir.is_dir()
        else []
    )
    names = [n for n in names if n.startswith(opts.get("prefix") or "")]
    if not sys.stdout.isatty():
        for name in names:
            print(name)
        return 0
    if not names:
        print("No sprites found.")
        return 0
    print(f"{'NAME':<30} {'STATUS':<10} URL")
    for name in names:
        state = SpriteState(ctx.root, org, name)
        print(f"{name:<30} {state.power():<10} {ctx.url(state)}")
    return 0


def cmd_destroy(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(
        args, {"--force": ("force", "bool"), "-f": ("force", "bool")}
    )
    state = ctx.sprite(_one_arg(positional, "destroy") if positional else None)
    if not opts.get("force"):
        if not sys.stdin.isatty():
            raise StandinError(
                f"refusing to destroy sprite {state.name} without confirmation: "
                "stdin is not a terminal (use --force)"
            )
        sys.stderr.write(f"Type the sprite name ({state.name}) to confirm: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip() != state.name:
            raise StandinError("destroy cancelled")
    print(f"Destroying sprite {state.name}...", flush=True)
    stop_supervisor(state)
    shutil.rmtree(state.dir)
    marker = find_dotsprite(Path.cwd())
    if marker is not None and (read_json(marker, {}) or {}).get("sprite") == state.name:
        marker.unlink()
    print(f"✓ Sprite {state.name} destroyed")
    return 0


def cmd_use(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"--unset": ("unset", "bool")})
    marker = Path.cwd() / ".sprite"
    if opts.get("unset"):
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        print("✓ Removed .sprite")
        return 0
    state = ctx.sprite(_one_arg(positional, "use"))
    marker.write_text(
        json.dumps({"organization": state.org, "sprite": state.name}) + "\n"
    )
    print(f"✓ Using sprite {state.name} (wrote {marker})")
    return 0


def cmd_info(ctx: Context, args: list[str], after: list[str] | None) -> int:
    _, positional = parse_flags(args, {})
    state = ctx.sprite(_one_arg(positional, "info") if positional else None)
    meta = state.meta()
    print(f"Name: {state.name}")
    print(f"ID: {meta.get('id', '')}")
    print(f"Organization: {state.org}")
    print(f"Status: {state.power()}")
    print(f"URL: {ctx.url(state)}")
    print(f"URL Auth: {meta.get('url_auth', 'sprite')}")
    print(f"Labels: {', '.join(meta.get('labels') or [])}")
    print(f"Created: {meta.get('created_at', '')}")
    return 0


def cmd_url(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"--auth": ("auth", "value")})
    if positional[:1] == ["update"]:
        return _set_url_auth(ctx, opts.get("auth"), "--auth")
    if positional or opts:
        raise StandinError(f'unknown command "{positional[0]}" for "sprite url"')
    state = ctx.sprite()
    print(f"URL: {ctx.url(state)}")
    print(f"Auth: {state.meta().get('url_auth', 'sprite')}")
    return 0


def cmd_config(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"--url-auth": ("auth", "value")})
    if positional != ["update"]:
        raise StandinError("usage: sprite config update --url-auth public|sprite")
    return _set_url_auth(ctx, opts.get("auth"), "--url-auth")


def _set_url_auth(ctx: Context, auth: str | None, flag: str) -> int:
    if auth not in ("public", "sprite"):
        raise StandinError(f"invalid {flag} value {auth!r}: expected public or sprite")
    state = ctx.sprite()
    with locked(state.dir / "meta.lock"):
        meta = state.meta()
        meta["url_auth"] = auth
        write_json(state.dir / "sprite.json", meta)
    print(f"✓ URL access for {state.name} set to {auth}")
    return 0


# --- commands: checkpoints ----------------------------------------------------------


def cmd_checkpoint(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"--comment": ("comment", "value")})
    action = positional[0] if positional else ""
    state = ctx.sprite()
    if action == "create":
        return _checkpoint_create(state, opts.get("comment") or "")
    if action in ("list", "ls"):
        for meta in _checkpoints(state):
            print(f"{meta['id']}\t{meta['created_at']}\t{meta['comment']}")
        return 0
    if action in ("info", "delete") and len(positional) == 2:
        target = state.checkpoints / positional[1]
        if not (target / "meta.json").is_file():
            raise StandinError(f"checkpoint {positional[1]} not found")
        if action == "info":
            for key, value in read_json(target / "meta.json", {}).items():
                print(f"{key}: {value}")
        else:
            shutil.rmtree(target)
            print(f"✓ Checkpoint {positional[1]} deleted")
        return 0
    raise StandinError("usage: sprite checkpoint create|list|info vN|delete vN")


def _checkpoints(state: SpriteState) -> list[dict[str, Any]]:
    found = [read_json(p / "meta.json") for p in state.checkpoints.glob("v*")]
    return sorted((m for m in found if m), key=lambda m: int(m["id"][1:]))


def _checkpoint_create(state: SpriteState, comment: str) -> int:
    with locked(state.dir / "checkpoint.lock"):
        existing = [int(m["id"][1:]) for m in _checkpoints(state)]
        version = f"v{max(existing, default=0) + 1}"
        target = state.checkpoints / version
        target.mkdir()
        copy_tree(state.home, target / "home")
        copy_tree(state.runtime, target / "dotsprite")
        if (state.dir / "services.json").exists():
            shutil.copy2(state.dir / "services.json", target / "services.json")
        write_json(
            target / "meta.json",
            {"id": version, "created_at": now_iso(), "comment": comment},
        )
    print(f"Checkpoint created: {version}")
    return 0


def cmd_restore(ctx: Context, args: list[str], after: list[str] | None) -> int:
    _, positional = parse_flags(args, {})
    version = _one_arg(positional, "restore")
    state = ctx.sprite()
    source = state.checkpoints / version
    if not (source / "meta.json").is_file():
        raise StandinError(f"checkpoint {version} not found")
    print(f"Restoring sprite {state.name} to {version}...", flush=True)
    # Restoring restarts the environment: every session and process ends.
    stop_supervisor(state)
    for part in ("home", "dotsprite"):
        shutil.rmtree(state.dir / part)
        copy_tree(source / part, state.dir / part)
    services = state.dir / "services.json"
    services.unlink(missing_ok=True)
    if (source / "services.json").exists():
        shutil.copy2(source / "services.json", services)
    ensure_supervisor(state)
    print(f"✓ Restored {state.name} to {version}")
    return 0


# --- commands: exec and console -----------------------------------------------------


def cmd_exec(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(
        args,
        {
            "--dir": ("dir", "value"),
            "-d": ("dir", "value"),
            "--env": ("env", "list"),
            "-e": ("env", "list"),
            "--file": ("file", "list"),
            "-f": ("file", "list"),
            "--tty": ("tty", "bool"),
            "-t": ("tty", "bool"),
            "--no-port-forward": ("no_port_forward", "bool"),
        },
    )
    command = positional + (after or [])
    if not command:
        raise StandinError("no command given: sprite exec [flags] -- CMD [ARGS...]")
    env = _sandbox_env(opts["env"])
    if opts.get("tty"):
        env["TERM"] = os.environ.get("TERM", "xterm-256color")
    state = ctx.sprite()
    uploads = [_open_upload(item) for item in opts["file"]]
    return run_in_sprite(
        ctx,
        state,
        command,
        env=env,
        cwd=opts.get("dir") or SANDBOX_HOME,
        uploads=uploads,
        use_tty=bool(opts.get("tty")),
    )


def _sandbox_env(entries: list[str]) -> dict[str, str]:
    env = {
        "HOME": SANDBOX_HOME,
        "USER": "sprite",
        "LOGNAME": "sprite",
        "SHELL": "/bin/bash",
        "PATH": SANDBOX_PATH,
        "LANG": "C.UTF-8",
    }
    for entry in entries:
        # Values are split on commas: a value cannot contain one.
        for pair in entry.split(","):
            key, has_value, value = pair.partition("=")
            if not has_value or not key:
                raise StandinError(f"invalid --env entry {pair!r}: expected KEY=VALUE")
            env[key] = value
    return env


def _open_upload(item: str) -> tuple[int, str]:
    source, has_dest, dest = item.partition(":")
    if not has_dest or not source or not dest:
        raise StandinError(f"invalid --file {item!r}: expected SRC:DEST")
    try:
        fd = os.open(source, os.O_RDONLY)
    except OSError as exc:
        raise StandinError(f"failed to read {source}: {exc.strerror}") from None
    limit = env_float("SPRITE_STANDIN_UPLOAD_LIMIT", UPLOAD_LIMIT_BYTES)
    if os.fstat(fd).st_size > limit:
        os.close(fd)
        raise StandinError(f"failed to upload {source}: HTTP 502: Bad Gateway")
    return fd, dest


def _noise(ctx: Context, line: str) -> None:
    if os.environ.get("SPRITE_STANDIN_NOISE", "1") != "0":
        print(line, flush=True)


def run_in_sprite(
    ctx: Context,
    state: SpriteState,
    command: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    uploads: list[tuple[int, str]],
    use_tty: bool,
) -> int:
    _noise(ctx, f"Connecting to {state.name}...")
    pid = ensure_supervisor(state)
    with Hold(state, "exec"):
        _noise(ctx, f"Running: {' '.join(command)}")
        spec_r, spec_w = os.pipe()
        spec = {
            "argv": command,
            "env": env,
            "cwd": cwd,
            "tty": use_tty,
            "uploads": [{"fd": fd, "dest": dest} for fd, dest in uploads],
        }
        argv = [
            "nsenter",
            "-t",
            str(pid),
            "-m",
            "-p",
            "--",
            sys.executable,
            "-I",
            "-S",
            str(PACKAGE_DIR / "_launch.py"),
            str(spec_r),
        ]
        ctx.debug(f"exec {argv}")
        fault = take_fault(ctx.root, "exec", kinds=("transport",))
        session = ExecSession(argv, [spec_r, *(fd for fd, _ in uploads)], use_tty)
        os.close(spec_r)
        for fd, _ in uploads:
            os.close(fd)
        with os.fdopen(spec_w, "w") as spec_file:
            json.dump(spec, spec_file)
        return session.relay(fault)


def _stdin_is_forwarded() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode)


class ExecSession:
    """One remote command: its output relayed, signals and transport faults handled."""

    def __init__(self, argv: list[str], pass_fds: list[int], use_tty: bool) -> None:
        self.use_tty = use_tty
        self.master: int | None = None
        if use_tty:
            self.master, slave = pty.openpty()
            with contextlib.suppress(OSError):
                size = fcntl.ioctl(0, termios.TIOCGWINSZ, bytes(8))
                fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
            self.proc = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                pass_fds=pass_fds,
                start_new_session=True,
            )
            os.close(slave)
        else:
            stdin: Any = 0 if _stdin_is_forwarded() else subprocess.DEVNULL
            self.proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
                start_new_session=True,
            )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def relay(self, fault: dict[str, Any] | None) -> int:
        sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        handlers = {
            s: signal.signal(s, lambda *_: None)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        outputs = self._register_outputs(sel)
        pidfd = os.pidfd_open(self.proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            with self._raw_terminal():
                return self._loop(sel, outputs, wake_r, fault)
        finally:
            signal.set_wakeup_fd(previous)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for fd in (wake_r, wake_w, pidfd):
                os.close(fd)

    def _register_outputs(self, sel: selectors.BaseSelector) -> dict[int, int]:
        """Map each readable fd to where its bytes go."""
        if self.master is not None:
            if sys.stdin.isatty():
                sel.register(0, selectors.EVENT_READ, "stdin")
            sel.register(self.master, selectors.EVENT_READ, "output")
            return {self.master: 1}
        assert self.proc.stdout and self.proc.stderr
        outputs = {self.proc.stdout.fileno(): 1, self.proc.stderr.fileno(): 2}
        for fd in outputs:
            sel.register(fd, selectors.EVENT_READ, "output")
        return outputs

    @contextlib.contextmanager
    def _raw_terminal(self) -> Iterator[None]:
        if self.master is None or not sys.stdin.isatty():
            yield
            return
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        try:
            yield
        finally:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)

    def _loop(
        self,
        sel: selectors.BaseSelector,
        outputs: dict[int, int],
        wake_r: int,
        fault: dict[str, Any] | None,
    ) -> int:
        started = time.monotonic()
        cut_at = fault.get("after_seconds", 0.0) if fault else None
        budget = fault.get("after_bytes") if fault else None
        if budget is not None and fault and "after_seconds" not in fault:
            cut_at = None
        exited = False
        while outputs and not exited:
            timeout = (
                None
                if cut_at is None
                else max(cut_at - (time.monotonic() - started), 0)
            )
            events = sel.select(timeout)
            if not events and cut_at is not None:
                return self._transport_error()
            for key, _ in events:
                if key.data == "signal":
                    received = os.read(wake_r, 64)
                    for sig in received:
                        if sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                            self.kill()
                            return 128 + sig
                elif key.data == "exit":
                    exited = True
                elif key.data == "stdin":
                    data = os.read(0, 4096)
                    if data and self.master is not None:
                        os.write(self.master, data)
                else:
                    data = _read(key.fd)
                    if budget is not None and len(data) >= budget:
                        _write_all(outputs[key.fd], data[:budget])
                        return self._transport_error()
                    if budget is not None:
                        budget -= len(data)
                    if data:
                        _write_all(outputs[key.fd], data)
                    else:
                        sel.unregister(key.fd)
                        del outputs[key.fd]
        # The command ended: take what is already buffered, but do not wait for
        # background processes that inherited its output.
        for fd, target in outputs.items():
            os.set_blocking(fd, False)
            while data := _read(fd):
                _write_all(target, data)
        return _exit_code(self.proc.wait())

    def _transport_error(self) -> int:
        self.kill()
        sys.stderr.write(TRANSPORT_ERROR + "\n")
        sys.stderr.flush()
        return 1


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, OSError):
        return b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return
        view = view[written:]


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def cmd_console(ctx: Context, args: list[str], after: list[str] | None) -> int:
    parse_flags(args, {})
    return _console(ctx, ctx.sprite())


def _console(ctx: Context, state: SpriteState) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise StandinError(
            f"failed to open console for {state.name}: stdin is not a terminal"
        )
    env = _sandbox_env([])
    env["TERM"] = os.environ.get("TERM", "xterm-256color")
    return run_in_sprite(
        ctx, state, ["bash", "-l"], env=env, cwd=SANDBOX_HOME, uploads=[], use_tty=True
    )


def cmd_sessions(ctx: Context, args: list[str], after: list[str] | None) -> int:
    _, positional = parse_flags(args, {})
    ctx.sprite()
    if positional[:1] in ([], ["list"], ["ls"]):
        print("No active sessions")
        return 0
    raise StandinError("sessions attach/kill are not emulated by the sprite stand-in")


def cmd_api(ctx: Context, args: list[str], after: list[str] | None) -> int:
    ctx.ensure_auth()
    raise StandinError("sprite api is not emulated by the sprite stand-in")


# --- commands: proxy ----------------------------------------------------------------


def cmd_proxy(ctx: Context, args: list[str], after: list[str] | None) -> int:
    opts, positional = parse_flags(args, {"-W": ("stdio", "value")})
    specs = positional + (after or [])
    state = ctx.sprite()
    ensure_supervisor(state)
    if opts.get("stdio"):
        return _proxy_stdio(state, opts["stdio"])
    if not specs:
        raise StandinError("usage: sprite proxy LOCAL:REMOTE... or PORT...")
    pairs = [_port_pair(spec) for spec in specs]
    listeners = [_listen(local) for local, _ in pairs]
    record = ctx.root / "proxies" / str(os.getpid())
    record.parent.mkdir(exist_ok=True)
    write_json(
        record,
        {"pid": os.getpid(), "sprite": state.name, "org": state.org, "ports": pairs},
    )
    try:
        for (_local, remote), listener in zip(pairs, listeners, strict=False):
            bound = listener.getsockname()[1]
            print(f"Forwarding 127.0.0.1:{bound} -> {state.name}:{remote}", flush=True)
        return _serve_proxy(state, listeners, [remote for _, remote in pairs])
    finally:
        record.unlink(missing_ok=True)


def _port_pair(spec: str) -> tuple[int, int]:
    local, _, remote = spec.partition(":")
    try:
        return int(local), int(remote or local)
    except ValueError:
        raise StandinError(
            f"invalid port mapping {spec!r}: expected LOCAL:REMOTE"
        ) from None


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        reason = (exc.strerror or str(exc)).lower()
        raise StandinError(f"failed to listen on 127.0.0.1:{port}: {reason}") from None
    listener.listen(64)
    return listener


def _serve_proxy(
    state: SpriteState, listeners: list[socket.socket], remotes: list[int]
) -> int:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    watch_owner_lock(lambda: os.write(wake_w, bytes([signal.SIGTERM])))
    sel = selectors.DefaultSelector()
    sel.register(wake_r, selectors.EVENT_READ, None)
    for listener, remote in zip(listeners, remotes, strict=False):
        sel.register(listener, selectors.EVENT_READ, remote)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                if any(b != signal.SIGCHLD for b in os.read(wake_r, 64)):
                    for listener in listeners:
                        listener.close()
                    return 0
                continue
            client, _ = key.fileobj.accept()  # type: ignore[union-attr]
            threading.Thread(
                target=_forward, args=(state, client, key.data), daemon=True
            ).start()


def _forward(state: SpriteState, client: socket.socket, remote_port: int) -> None:
    with client:
        try:
            hold = Hold(state, "proxy")
        except StandinError:
            return
        with hold:
            try:
                upstream = socket.create_connection(("127.0.0.1", remote_port))
            except OSError:
                return
            with upstream:
                _pipe_both_ways(client, upstream)


def _pipe_both_ways(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
                src.shutdown(socket.SHUT_RDWR)

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join()


def _proxy_stdio(state: SpriteState, target: str) -> int:
    _, _, port = target.rpartition(":")
    with Hold(state, "proxy"):
        try:
            upstream = socket.create_connection(("127.0.0.1", int(port)))
        except (OSError, ValueError) as exc:
            raise StandinError(f"failed to connect to {target}: {exc}") from None
        with upstream:
            stdin_pump = threading.Thread(
                target=lambda: _copy_fd_to_socket(0, upstream), daemon=True
            )
            stdin_pump.start()
            while data := upstream.recv(65536):
                _write_all(1, data)
    return 0


def _copy_fd_to_socket(fd: int, sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


# --- faults, latency and the invocation log -----------------------------------------


def take_fault(
    root: Path, subcommand: str, kinds: tuple[str, ...]
) -> dict[str, Any] | None:
    """Consume one use of the fault configured for subcommand, if its kind matches."""
    path = root / "faults.json"
    if not path.exists():
        return None
    with locked(root / "faults.lock"):
        faults = read_json(path, {}) or {}
        fault = faults.get(subcommand)
        if not fault or fault.get("kind", "fail") not in kinds:
            return None
        times = fault.get("times")
        if times is not None:
            if times <= 1:
                del faults[subcommand]
            else:
                fault["times"] = times - 1
            write_json(path, faults)
        return dict(fault)


def apply_fault(root: Path, subcommand: str) -> int | None:
    fault = take_fault(root, subcommand, kinds=("fail", "rate_limit"))
    if fault is None:
        return None
    if fault.get("kind") == "rate_limit":
        body = {
            "error": "sprite_creation_rate_limited",
            "message": "sprite creation rate limit exceeded",
            "retry_after_seconds": fault.get("retry_after_seconds", 30),
        }
        sys.stderr.write(
            "Error creating sprite: failed to create sprite (status 429): "
            f"{json.dumps(body)}\n"
        )
        return 1
    sys.stdout.write(fault.get("stdout", ""))
    message = fault.get("stderr", f"Error: injected failure of sprite {subcommand}")
    sys.stderr.write(
        message if message.endswith("\n") or not message else message + "\n"
    )
    return int(fault.get("exit_code", 1))


COMMANDS: dict[str, Callable[[Context, list[str], list[str] | None], int]] = {
    "login": cmd_login,
    "logout": cmd_logout,
    "auth": cmd_auth,
    "org": cmd_org,
    "create": cmd_create,
    "list": cmd_list,
    "destroy": cmd_destroy,
    "use": cmd_use,
    "info": cmd_info,
    "url": cmd_url,
    "config": cmd_config,
    "exec": cmd_exec,
    "console": cmd_console,
    "sessions": cmd_sessions,
    "proxy": cmd_proxy,
    "checkpoint": cmd_checkpoint,
    "restore": cmd_restore,
    "api": cmd_api,
}


def run(argv: list[str]) -> tuple[str, int]:
    """Run one invocation; return the canonical subcommand and the exit code."""
    subcommand = ""
    try:
        g, rest, after = split_globals(argv)
        subcommand = ALIASES.get(rest[0], rest[0]) if rest else ""
        if g.help or not subcommand or subcommand == "help":
            print(USAGE, end="")
            return subcommand or "help", 0
        if subcommand not in COMMANDS:
            sys.stderr.write(
                f'Error: unknown command "{rest[0]}" for "sprite"\n'
                "Run 'sprite --help' for usage.\n"
            )
            return subcommand, 2
        ctx = Context(g)
        time.sleep(env_float("SPRITE_STANDIN_LATENCY", 0.0))
        code = apply_fault(ctx.root, subcommand)
        if code is not None:
            return subcommand, code
        return subcommand, COMMANDS[subcommand](ctx, rest[1:], after)
    except StandinError as exc:
        sys.stdout.flush()
        text = str(exc) if exc.bare else f"Error: {exc}"
        sys.stderr.write(text + "\n")
        return subcommand, exc.exit_code
    except KeyboardInterrupt:
        return subcommand, 130


def main() -> None:
    started = time.time()
    argv = sys.argv[1:]
    subcommand, code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(StandinError, OSError):
        record = {
            "argv": ["sprite", *argv],
            "cwd": os.getcwd(),
            "subcommand": subcommand,
            "start": started,
            "end": time.time(),
            "exit_code": code,
            "pid": os.getpid(),
        }
        with (
            locked(root_dir() / "invocations.lock"),
            open(root_dir() / "invocations.jsonl", "a") as log,
        ):
            log.write(json.dumps(record) + "\n")
    os._exit(code)
