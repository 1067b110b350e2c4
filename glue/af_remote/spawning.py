"""``up``, ``status`` and ``down``: spawns from request to termination.

A spawn is one agent: one OpenCode session on its own git worktree and branch
``af/SPAWN-ID`` in a sandbox. ``up`` records the spawn before it touches the
provider, so no sandbox exists without a record, and moves it through
``requested`` -> ``spawning`` -> ``running`` (or ``failed``, or ``unknown`` when a
step's outcome cannot be known, such as a dropped connection or Ctrl-C).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from af_remote import config, native, project, ui
from af_remote.config import Settings
from af_remote.errors import AfRemoteError, UsageError
from af_remote.listing import extras, summary
from af_remote.local import LocalSandbox
from af_remote.native import Result
from af_remote.protocol import BootstrapReport
from af_remote.records import Record, Registry
from af_remote.sprites import ROOT as SPRITE_ROOT
from af_remote.sprites import UPLOAD_DIR, Sprite, check_upload_size, is_not_found

MAX_PROMPT_BYTES = 1024 * 1024
SCRIPTS = {
    "sprites": ("bootstrap.sh", "serve.sh", "keepalive.sh", "status.sh"),
    "local": ("bootstrap.sh", "serve.sh"),
}
LIVE_STATES = ("requested", "spawning", "running", "unknown")


# --- targets: what differs between providers ---------------------------------


@dataclass
class SpritesTarget:
    settings: Settings
    calls: int = 0  # sprite invocations so far, for the output and the benchmarks

    @property
    def sprite(self) -> Sprite:
        return Sprite(self.settings.sandbox, self.settings.org)

    @property
    def root(self) -> str:
        return SPRITE_ROOT

    def uploads(self, spawn_id: str, files: dict[str, Path]) -> list[tuple[Path, str]]:
        return [
            (path, f"{UPLOAD_DIR}/af-remote.{spawn_id}.{name}")
            for name, path in files.items()
        ]

    def bootstrap_command(self, spawn_id: str) -> list[str]:
        return ["bash", f"{UPLOAD_DIR}/af-remote.{spawn_id}.bootstrap.sh"]

    def plan(self, spawn_id: str, files: dict[str, Path], create: bool) -> list[str]:
        commands = [self.sprite.create_argv()] if create else []
        if create and self.settings.url_auth != "sprite":
            commands.append(self.sprite.url_auth_argv(self.settings.url_auth))
        commands.append(
            self.sprite.exec_argv(
                self.bootstrap_command(spawn_id), self.uploads(spawn_id, files)
            )
        )
        return [native.display(argv) for argv in commands]

    def ensure(self, known: bool) -> bool:
        """Make sure the sprite exists; True when it was created just now."""
        if known:
            return False
        self.calls += 1
        if self.sprite.create():
            ui.progress(f"created sprite {self.settings.sandbox}")
            return True
        ui.progress(f"adopted existing sprite {self.settings.sandbox}")
        return False

    def apply_url_auth(self, previous: str | None, created: bool) -> None:
        """Keep the sprite URL's access as configured; no call while it already is.

        A new sprite starts with "sprite" (org members only); anything else is set
        once, and again only when the setting changes.
        """
        wanted = self.settings.url_auth
        if previous == wanted or (previous is None and created and wanted == "sprite"):
            return
        if previous is None and not created and wanted == "sprite":
            return  # an adopted sprite: leave what its owner chose
        self.calls += self.sprite.set_url_auth(wanted)
        ui.progress(f"sprite URL access set to {wanted}")

    def stored_password(self) -> str | None:
        """The password an existing sprite's server already uses."""
        self.calls += 1
        try:
            return self.sprite.fetch_password()
        except AfRemoteError:
            return None  # never set up by af-remote: a new password is fine

    def bootstrap(
        self, spawn_id: str, files: dict[str, Path], on_line: Callable[[str], None]
    ) -> Result:
        if "source.bundle" in files:
            check_upload_size(files["source.bundle"])
        self.calls += 1
        return self.sprite.stream(
            self.bootstrap_command(spawn_id), self.uploads(spawn_id, files), on_line
        )

    def server_ref(self, port: int) -> str | None:
        # The sprite URL holds an org id only `sprite info` knows; asking would cost
        # a call on the critical path, so the record names the server by sprite.
        return None

    def next_commands(self, spawn_id: str) -> list[str]:
        return [
            f"af-remote attach {spawn_id}",
            native.display(self.sprite.console_argv()),
            native.display(self.sprite.destroy_argv()),
        ]


@dataclass
class LocalTarget:
    settings: Settings
    calls: int = 0

    @property
    def sandbox(self) -> LocalSandbox:
        return LocalSandbox(self.settings.sandbox)

    @property
    def root(self) -> str:
        return str(self.sandbox.directory)

    def plan(self, spawn_id: str, files: dict[str, Path], create: bool) -> list[str]:
        incoming = self.sandbox.incoming(spawn_id)
        lines = [f"mkdir -p {shlex.quote(str(incoming))}"]
        lines += [
            f"cp {shlex.quote(str(path))} {shlex.quote(str(incoming / name))}"
            for name, path in files.items()
        ]
        lines.append(native.display(self.sandbox.bootstrap_argv(spawn_id)))
        return lines

    def ensure(self, known: bool) -> bool:
        created = self.sandbox.ensure()
        if created:
            ui.progress(f"created sandbox {self.sandbox.directory}")
        return created

    def apply_url_auth(self, previous: str | None, created: bool) -> None:
        return None  # a local server listens on 127.0.0.1 only

    def stored_password(self) -> str | None:
        return self.sandbox.stored_password()

    def bootstrap(
        self, spawn_id: str, files: dict[str, Path], on_line: Callable[[str], None]
    ) -> Result:
        self.sandbox.place(spawn_id, files)
        self.calls += 1
        return self.sandbox.stream(self.sandbox.bootstrap_argv(spawn_id), on_line)

    def server_ref(self, port: int) -> str | None:
        return f"http://127.0.0.1:{port}"

    def next_commands(self, spawn_id: str) -> list[str]:
        return [
            f"af-remote attach {spawn_id}",
            native.display(self.sandbox.serve_argv("status")),
            f"af-remote down --destroy {spawn_id}",
        ]


Target = SpritesTarget | LocalTarget


def make_target(settings: Settings) -> Target:
    if settings.provider == "sprites":
        return SpritesTarget(settings)
    return LocalTarget(settings)


# --- up ------------------------------------------------------------------------


@dataclass
class Request:
    """What the user asked ``up`` for."""

    prompt: str | None
    title: str
    request_id: str | None
    dry_run: bool
    as_json: bool
    digest: str = ""


def up(args: argparse.Namespace) -> int:
    root = project.root()
    provider = project.pick_provider(root, args.provider)
    settings = config.load(root, provider, flags={"SANDBOX": args.name})
    prompt = read_prompt(args.prompt, args.prompt_file)
    if args.title is not None:
        _require_utf8(args.title, "--title")
    request = Request(
        prompt=prompt,
        title=args.title or default_title(prompt, root),
        request_id=args.request_id,
        dry_run=args.dry_run,
        as_json=args.json,
    )
    request.digest = _digest(settings, request)
    registry = Registry()
    target = make_target(settings)
    check_inputs(settings, registry)

    spawn, mode = _choose_spawn(registry, settings, request)
    if request.dry_run:
        return _dry_run(settings, target, registry, request, spawn, mode)
    if spawn is not None and mode == "done":
        _print_spawn(spawn, target, request.as_json, changed=False)
        return 0
    if spawn is None:
        spawn = registry.create_spawn(
            provider=provider,
            sandbox=settings.sandbox,
            request_id=request.request_id,
            af_remote=_extras(settings, request),
        )
        if spawn.get("af_remote", {}).get("payload_digest") != request.digest:
            # Another process created it with this key first, for another payload.
            raise _conflict(request)
    spawn = _run_spawn(registry, settings, target, request, spawn, mode)
    _print_spawn(spawn, target, request.as_json, changed=mode != "ensure")
    return 0


def _choose_spawn(
    registry: Registry, settings: Settings, request: Request
) -> tuple[Record | None, str]:
    """The spawn to work on and how: ("new"|"resume"|"ensure"|"done")."""
    if request.request_id:
        existing = registry.find_by_request_id(request.request_id)
        if existing is not None:
            if existing.get("af_remote", {}).get("payload_digest") != request.digest:
                raise _conflict(request)
            if existing.get("state") == "running":
                return existing, "done"
            return existing, "resume"
    running = _running_spawns(registry, settings)
    if running and settings.provider == "local" and not _local_exists(settings):
        # Deleted by hand: its spawns went with it; start afresh.
        for spawn in running:
            registry.update_spawn(
                spawn["spawn_id"],
                state="terminated",
                last_error="the sandbox directory was deleted",
            )
        running = []
    if request.prompt is None and running:
        return running[-1], "ensure"
    return None, "new"


def _local_exists(settings: Settings) -> bool:
    return LocalSandbox(settings.sandbox).exists()


def _run_spawn(
    registry: Registry,
    settings: Settings,
    target: Target,
    request: Request,
    spawn: Record,
    mode: str,
) -> Record:
    spawn_id = spawn["spawn_id"]
    report = BootstrapReport()
    if not request.as_json:
        ui.progress(
            f"spawn {spawn_id} in {settings.provider} sandbox {settings.sandbox}"
        )
    try:
        if mode != "ensure":
            registry.update_spawn(spawn_id, state="spawning")
        spawns = registry.spawns()  # one read serves both questions
        known = _sandbox_known(spawns, settings)
        previous_auth = _previous_url_auth(spawns, settings, spawn_id)
        created = target.ensure(known)
        target.apply_url_auth(previous_auth, created)
        # From here on the records know the sandbox exists: later runs skip create.
        registry.update_spawn(
            spawn_id, af_remote={"sandbox_ready": True, "url_auth": settings.url_auth}
        )
        _keep_password(settings, target, created)
        with tempfile.TemporaryDirectory(prefix="af-remote-up-") as scratch:
            files = prepare_files(Path(scratch), settings, request, spawn, mode)
            result = target.bootstrap(spawn_id, files, report.feed)
            never_started = not report.steps and report.error is None
            if known and never_started and is_not_found(result):
                # The record said the sandbox existed, but it is gone (destroyed by
                # hand): create it and run the bootstrap once more.
                ui.progress(f"sandbox {settings.sandbox} is gone; creating it again")
                target.ensure(known=False)
                report = BootstrapReport()
                result = target.bootstrap(spawn_id, files, report.feed)
    except KeyboardInterrupt:
        _record_failure(registry, spawn_id, mode, "unknown", _interrupted(report))
        raise
    except AfRemoteError as error:
        # Before the bootstrap said anything, nothing in the sandbox changed.
        state = "unknown" if report.steps else "failed"
        _record_failure(registry, spawn_id, mode, state, str(error))
        raise
    return _record_outcome(registry, settings, target, spawn, mode, report, result)


def _keep_password(settings: Settings, target: Target, created: bool) -> None:
    """Reuse the password of a sandbox that has one, when this machine lacks it.

    Uploading a new password to a running server would lock af-remote out of it
    (the server keeps the one it started with), so it is fetched instead.
    """
    path = config.password_path(settings.provider, settings.org, settings.sandbox)
    if created or path.exists():
        return
    stored = target.stored_password()
    if stored:
        ui.progress("using the password the sandbox's server already has")
        config.store_password(settings.provider, settings.org, settings.sandbox, stored)


def _record_outcome(
    registry: Registry,
    settings: Settings,
    target: Target,
    spawn: Record,
    mode: str,
    report: BootstrapReport,
    result: Result,
) -> Record:
    spawn_id = spawn["spawn_id"]
    if result.returncode == 130:
        _record_failure(registry, spawn_id, mode, "unknown", _interrupted(report))
        raise KeyboardInterrupt
    if report.result is None or result.returncode != 0:
        if report.error:
            state, message = "failed", f"bootstrap failed: {report.error}"
        else:
            state = "unknown"
            message = "the bootstrap ended without a result"
            if report.last_step:
                message += f" after step {report.last_step}"
        _record_failure(registry, spawn_id, mode, state, message)
        raise native.failure(result, message)

    session_id = str(report.result.get("session_id", ""))
    port = int(report.result.get("server_port") or settings.server_port)
    workdir = str(report.result.get("workdir", ""))
    server_ref = target.server_ref(port)
    details = {
        "server_port": port,
        "workdir": workdir,
        "branch": f"af/{spawn_id}",
        "opencode_version": report.result.get("opencode_version"),
    }
    if settings.provider == "local":
        # attach falls back to this install when opencode is not on PATH.
        details["opencode_prefix"] = settings.opencode_prefix or str(
            LocalSandbox(settings.sandbox).directory / "opencode"
        )
    updated = registry.update_spawn(
        spawn_id,
        state="running",
        session_id=session_id,
        server_ref=server_ref,
        last_error=None,
        af_remote=details,
    )
    registry.upsert_session(
        session_id=session_id,
        server_ref=server_ref,
        directory=workdir,
        project=str(settings.project_root),
        work_ref=spawn_id,
        af_remote={
            "provider": settings.provider,
            "sandbox": settings.sandbox,
            "org": settings.org,
            "server_port": port,
        },
    )
    return updated


def _record_failure(
    registry: Registry, spawn_id: str, mode: str, state: str, message: str
) -> None:
    if mode == "ensure":
        # The spawn itself was running before this check; note what happened only.
        registry.update_spawn(spawn_id, last_error=message)
    else:
        registry.update_spawn(spawn_id, state=state, last_error=message)


def _interrupted(report: BootstrapReport) -> str:
    where = f" during step {report.last_step}" if report.last_step else ""
    return f"interrupted{where}; run `af-remote up` again to converge"


def _conflict(request: Request) -> AfRemoteError:
    return UsageError(
        f"request id {request.request_id!r} was used for a different prompt or target",
        hint="use a new --request-id for a new request",
    )


# --- the files a run uploads ----------------------------------------------------


def check_inputs(settings: Settings, registry: Registry) -> None:
    """Read every local file a run depends on, before anything is recorded or the
    provider is touched: a render or registry file that cannot be used is reported
    now, not after a sandbox has changed."""
    render_scripts(settings)
    opencode_config(settings)
    server_env(settings)
    secrets_path = settings.render / config.SECRETS_FILE
    if secrets_path.exists():
        config.read_env_file(secrets_path, secret=True)
    registry.spawns()
    registry.sessions()


def render_scripts(settings: Settings) -> dict[str, Path]:
    """The render's scripts a run uploads, by name; a missing one is an error."""
    scripts: dict[str, Path] = {}
    for name in SCRIPTS[settings.provider]:
        source = settings.render / name
        if not source.is_file():
            if name == "status.sh":
                continue  # renders made before status.sh existed still work
            raise AfRemoteError(
                f"{source} is missing",
                hint=f"restore it with git, or `af-remote update --provider "
                f"{settings.provider}`",
            )
        scripts[name] = source
    return scripts


def prepare_files(
    scratch: Path, settings: Settings, request: Request, spawn: Record, mode: str
) -> dict[str, Path]:
    """Write the run's inputs into ``scratch`` (0700) and return them by name."""
    scratch.chmod(0o700)
    files = render_scripts(settings)

    def write(name: str, content: str | bytes, secret: bool = False) -> None:
        path = scratch / name
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)
        path.chmod(0o600 if secret else 0o644)
        files[name] = path

    write("opencode.json", opencode_config(settings))
    write("spawn.env", spawn_env(settings, spawn, _source_ref(settings)))
    write("secrets.env", secrets_env(settings, dry_run=request.dry_run), secret=True)
    write("server.env", server_env(settings))
    write("session.json", json.dumps({"title": request.title}, ensure_ascii=False))
    if request.prompt is not None and mode != "ensure":
        body = {"parts": [{"type": "text", "text": request.prompt}]}
        write("prompt.json", json.dumps(body, ensure_ascii=False))
    if settings.source == "bundle" and mode != "ensure":
        bundle = scratch / "source.bundle"
        native.run(
            ["git", "bundle", "create", "--quiet", str(bundle), "HEAD"],
            cwd=settings.project_root,
        )
        files["source.bundle"] = bundle
    return files


def opencode_config(settings: Settings) -> str:
    """The render's opencode.json, with the configured model set."""
    path = settings.render / "opencode.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = {}
    except (OSError, ValueError) as error:
        raise AfRemoteError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise AfRemoteError(f"{path} must hold a JSON object")
    if settings.model:
        document["model"] = settings.model
    return json.dumps(document, indent=2) + "\n"


def spawn_env(settings: Settings, spawn: Record, source_ref: str) -> str:
    """Settings for bootstrap.sh as ``KEY='value'`` lines that run nothing."""
    values = {
        "AF_SPAWN_ID": spawn["spawn_id"],
        "AF_ROOT": make_target(settings).root,
        "AF_OPENCODE_VERSION": settings.opencode_version,
        "AF_OPENCODE_PREFIX": settings.opencode_prefix or "",
        "AF_SERVER_PORT": str(settings.server_port),
        "AF_SOURCE": settings.source,
        "AF_SOURCE_URL": settings.source_url or "",
        "AF_SOURCE_REF": source_ref,
        "AF_KEEPALIVE": "on" if settings.keepalive else "off",
        "AF_KEEPALIVE_INTERVAL": str(settings.keepalive_interval),
        "AF_KEEPALIVE_EXPIRE": str(settings.keepalive_expire),
        "AF_URL_AUTH": settings.url_auth,
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def secrets_env(settings: Settings, *, dry_run: bool = False) -> str:
    """Forwarded secrets and the server password as quoted ``export`` lines."""
    values = config.forwarded_secrets(settings)
    if dry_run:
        # A dry run leaves no password file behind; the upload's size is the same.
        values[config.PASSWORD_VARIABLE] = "x" * 43
    else:
        values[config.PASSWORD_VARIABLE] = config.server_password(
            settings.provider, settings.org, settings.sandbox
        )
    return export_lines(values)


def server_env(settings: Settings) -> str:
    """The render's server.env (not secret) as quoted ``export`` lines."""
    path = settings.render / config.SERVER_ENV_FILE
    values = config.read_env_file(path) if path.exists() else {}
    for key in values:
        if not config.is_variable_name(key):
            raise AfRemoteError(f"{path}: {key!r} is not an environment variable name")
    return export_lines(values)


def export_lines(values: dict[str, str]) -> str:
    """``export KEY='value'`` lines that bash can source without running anything."""
    return "".join(
        f"export {key}={shlex.quote(value)}\n" for key, value in values.items()
    )


def _source_ref(settings: Settings) -> str:
    if settings.source == "clone":
        return settings.source_ref or ""
    head = native.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        cwd=settings.project_root,
        check=False,
    )
    if head.returncode != 0:
        raise AfRemoteError(
            f"{settings.project_root} has no commit to send",
            hint="the agent works on your HEAD: commit first (or set "
            "AF_REMOTE_SOURCE=clone)",
        )
    return head.stdout.strip()


def read_prompt(prompt: str | None, prompt_file: str | None) -> str | None:
    if prompt_file is None:
        if prompt is not None:
            _require_utf8(prompt, "--prompt")
        return prompt
    try:
        data = (
            sys.stdin.buffer.read()
            if prompt_file == "-"
            else Path(prompt_file).read_bytes()
        )
    except OSError as error:
        raise UsageError(f"cannot read --prompt-file {prompt_file}: {error}") from error
    if len(data) > MAX_PROMPT_BYTES:
        raise UsageError(f"the prompt is {len(data)} bytes; at most 1 MiB is allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"--prompt-file {prompt_file} is not UTF-8: {error}"
        ) from error


def _require_utf8(text: str, flag: str) -> None:
    # Arguments that are not UTF-8 reach Python as lone surrogates.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(f"{flag} is not UTF-8 ({error.reason})") from None


def default_title(prompt: str | None, root: Path) -> str:
    first = (prompt or "").strip().splitlines()[0:1]
    if first and first[0].strip():
        line = first[0].strip()
        return line if len(line) <= 60 else line[:59] + "…"
    return f"af-remote: {root.name}"


def _digest(settings: Settings, request: Request) -> str:
    payload = json.dumps(
        [
            settings.provider,
            settings.org,
            settings.sandbox,
            request.prompt,
            request.title,
        ]
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _extras(settings: Settings, request: Request) -> dict[str, Any]:
    return {
        "org": settings.org,
        "project": str(settings.project_root),
        "render": str(settings.render),
        "server_port": settings.server_port,
        "title": request.title,
        "payload_digest": request.digest,
        "has_prompt": request.prompt is not None,
    }


# --- which spawns and sandboxes the records know ------------------------------


def _same_sandbox(record: Record, settings: Settings) -> bool:
    details = extras(record)
    return (
        record.get("provider") == settings.provider
        and record.get("provider_sandbox_id") == settings.sandbox
        and details.get("org") == settings.org
    )


def _running_spawns(registry: Registry, settings: Settings) -> list[Record]:
    return [
        record
        for record in registry.spawns()
        if _same_sandbox(record, settings)
        and record.get("state") == "running"
        and extras(record).get("project") == str(settings.project_root)
    ]


def _sandbox_known(spawns: list[Record], settings: Settings) -> bool:
    """Whether a record shows the sandbox exists (so creating it can be skipped)."""
    return any(
        _same_sandbox(record, settings)
        and extras(record).get("sandbox_ready")
        and record.get("state") != "terminated"
        for record in spawns
    )


def _previous_url_auth(
    spawns: list[Record], settings: Settings, spawn_id: str
) -> str | None:
    """The URL access af-remote last set on this sandbox, if it still exists."""
    earlier = [
        record
        for record in spawns
        if record.get("spawn_id") != spawn_id
        and _same_sandbox(record, settings)
        and record.get("state") != "terminated"
        and extras(record).get("url_auth")
    ]
    if not earlier:
        return None
    newest = max(earlier, key=lambda record: str(record.get("created_at", "")))
    return str(extras(newest)["url_auth"])


# --- output ----------------------------------------------------------------------


def spawn_json(spawn: Record, target: Target) -> dict[str, Any]:
    """A spawn's documented JSON shape (docs/json.md), with the next commands."""
    return {**summary(spawn), "next_commands": target.next_commands(spawn["spawn_id"])}


def _print_spawn(spawn: Record, target: Target, as_json: bool, changed: bool) -> None:
    data = spawn_json(spawn, target)
    if as_json:
        ui.out_json({**data, "changed": changed, "provider_calls": target.calls})
        return
    if not changed:
        ui.out("Already running; nothing changed.")
    ui.out(f"spawn    {data['spawn_id']}")
    ui.out(f"session  {data['session_id']}")
    ui.out(f"sandbox  {data['sandbox']} ({data['provider']})")
    ui.out(f"workdir  {data['workdir']}  (branch {data['branch']})")
    ui.out("")
    ui.out("Next:")
    for command in data["next_commands"]:
        ui.out(f"  {command}")


def _dry_run(
    settings: Settings,
    target: Target,
    registry: Registry,
    request: Request,
    spawn: Record | None,
    mode: str,
) -> int:
    if spawn is not None and mode == "done":
        _print_spawn(spawn, target, request.as_json, changed=False)
        return 0
    placeholder = spawn or {"spawn_id": "spw_DRYRUN", "session_id": None}
    with tempfile.TemporaryDirectory(prefix="af-remote-dry-run-") as scratch:
        files = prepare_files(Path(scratch), settings, request, placeholder, mode)
        create = not _sandbox_known(registry.spawns(), settings)
        commands = target.plan(placeholder["spawn_id"], files, create)
        uploads = {name: path.stat().st_size for name, path in files.items()}
    if request.as_json:
        ui.out_json({"mode": mode, "commands": commands, "uploads": uploads})
        return 0
    ui.out(f"Would run ({mode} spawn, nothing changed):")
    for command in commands:
        ui.out(f"  {command}")
    ui.out("Uploads:")
    for name, size in uploads.items():
        ui.out(f"  {name:<15} {size:>9} bytes")
    return 0


# --- status and down ------------------------------------------------------------


def status(spawn_ref: str | None, *, provider: str | None, as_json: bool) -> int:
    from af_remote import lifecycle

    return lifecycle.status(spawn_ref, provider=provider, as_json=as_json)


def down(spawn_ref: str | None, *, provider: str | None, destroy: bool) -> int:
    from af_remote import lifecycle

    return lifecycle.down(spawn_ref, provider=provider, destroy=destroy)
