"""Settings for a run: flags > environment > the render's ``.env`` > defaults.

Every setting has one name, ``AF_REMOTE_<KEY>``, used both in ``.env`` and in the
environment. Values are checked here as strictly as the template's validators,
because ``.env`` is edited by hand after rendering; a bad value is an error that
names where it came from.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from af_remote import paths, project, redact, ui
from af_remote.errors import AfRemoteError, UsageError

PREFIX = "AF_REMOTE_"
ENV_FILE = ".env"
SECRETS_FILE = "secrets.env"
SERVER_ENV_FILE = "server.env"
PASSWORD_VARIABLE = "OPENCODE_SERVER_PASSWORD"  # noqa: S105 (a name, not a value)

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}")
_URL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:/@+%-]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

DEFAULTS: dict[str, str] = {
    "ORG": "",
    "OPENCODE_VERSION": "1.18.33",
    "MODEL": "",
    "URL_AUTH": "sprite",
    "SOURCE": "bundle",
    "SOURCE_URL": "",
    "SOURCE_REF": "",
    "FORWARD_SECRETS": "",
    "KEEPALIVE": "on",
    "KEEPALIVE_INTERVAL": "10",
    "KEEPALIVE_EXPIRE": "60",
    "OPENCODE_PREFIX": "",
}
# Settings whose command-line flag is not named after the setting.
FLAG_NAMES = {"SANDBOX": "--name"}
PROVIDER_DEFAULTS: dict[str, dict[str, str]] = {
    "sprites": {"SERVER_PORT": "8080"},
    "local": {"SERVER_PORT": "0"},
}


@dataclass(frozen=True)
class Settings:
    provider: str
    project_root: Path
    render: Path
    sandbox: str
    org: str | None
    opencode_version: str
    server_port: int
    model: str | None
    url_auth: str
    source: str
    source_url: str | None
    source_ref: str | None
    forward_secrets: tuple[str, ...]
    keepalive: bool
    keepalive_interval: int
    keepalive_expire: int
    opencode_prefix: str | None


def load(
    project_root: Path,
    provider: str,
    *,
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings of ``provider``'s render in ``project_root``."""
    environ = os.environ if environ is None else environ
    render = project.render_dir(project_root, provider)
    file_values = read_env_file(render / ENV_FILE)
    raw: dict[str, tuple[str, str]] = {}  # key -> (value, where it came from)
    for key, value in {**DEFAULTS, **PROVIDER_DEFAULTS[provider]}.items():
        raw[key] = (value, "default")
    for key, value in file_values.items():
        if key.startswith(PREFIX):
            raw[key.removeprefix(PREFIX)] = (value, str(render / ENV_FILE))
    known = {*raw, "SANDBOX"}
    for key, value in environ.items():
        if key.startswith(PREFIX) and key.removeprefix(PREFIX) in known:
            raw[key.removeprefix(PREFIX)] = (value, f"environment variable {key}")
    for key, flag in (flags or {}).items():
        if flag is not None:
            raw[key] = (flag, FLAG_NAMES.get(key, f"--{key.lower().replace('_', '-')}"))
    if "SANDBOX" not in raw:
        raise AfRemoteError(
            f"{render / ENV_FILE} sets no {PREFIX}SANDBOX",
            hint="add it, or re-render with `af-remote init --force`",
        )
    return _settings(provider, project_root, render, raw)


def read_env_file(path: Path, *, secret: bool = False) -> dict[str, str]:
    """The ``KEY=value`` pairs of a dotenv file; a bad line is an error.

    ``secret``: the error names the line but does not quote it, since a line that
    does not parse holds a value that was never registered for redaction.
    """
    import io

    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AfRemoteError(
            f"{path} is missing",
            hint="re-render with `af-remote init --force`, or restore it from git",
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise AfRemoteError(f"cannot read {path}: {error}") from error
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # The parser folds blank lines into the statement that follows them.
            text = binding.original.string
            leading = text[: len(text) - len(text.lstrip())]
            line = binding.original.line + leading.count("\n")
            shown = "(not shown: may hold a secret)" if secret else repr(text.strip())
            raise AfRemoteError(f"{path} line {line} does not parse: {shown}")
        if binding.key is not None:
            values[binding.key] = binding.value or ""
    return values


def _settings(
    provider: str, root: Path, render: Path, raw: dict[str, tuple[str, str]]
) -> Settings:
    def text(key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        value, source = raw[key]
        value = value.strip()
        if value and pattern is not None and not pattern.fullmatch(value):
            raise UsageError(f"{PREFIX}{key}={value!r} from {source}: {what}")
        return value

    def number(key: str, low: int, high: int) -> int:
        value, source = raw[key]
        try:
            parsed = int(value)
        except ValueError:
            parsed = low - 1
        if not low <= parsed <= high:
            raise UsageError(
                f"{PREFIX}{key}={value!r} from {source}: "
                f"must be a whole number from {low} to {high}"
            )
        return parsed

    def choice(key: str, *allowed: str) -> str:
        value, source = raw[key]
        if value not in allowed:
            raise UsageError(
                f"{PREFIX}{key}={value!r} from {source}: must be one of "
                + ", ".join(allowed)
            )
        return value

    sandbox = text("SANDBOX", DNS_LABEL, "must be a DNS label (a-z, 0-9, -)")
    if not sandbox:
        raise UsageError(f"{PREFIX}SANDBOX is empty (from {raw['SANDBOX'][1]})")
    forward = text("FORWARD_SECRETS")
    names = tuple(name.strip() for name in forward.split(",") if name.strip())
    for name in names:
        if not is_variable_name(name):
            raise UsageError(
                f"{PREFIX}FORWARD_SECRETS names {name!r} (from "
                f"{raw['FORWARD_SECRETS'][1]}): not an environment variable name"
            )
    source = choice("SOURCE", "bundle", "clone")
    source_url = text("SOURCE_URL", _URL, "must be a git URL without spaces or quotes")
    if source == "clone" and not source_url:
        raise UsageError(f"{PREFIX}SOURCE=clone needs {PREFIX}SOURCE_URL")
    return Settings(
        provider=provider,
        project_root=root,
        render=render,
        sandbox=sandbox,
        org=text("ORG", _ORG, "letters, digits, - and _") or None,
        opencode_version=text("OPENCODE_VERSION", _VERSION, "a version like 1.18.33"),
        server_port=number("SERVER_PORT", 0 if provider == "local" else 1, 65535),
        model=text("MODEL", _MODEL, "provider/model") or None,
        url_auth=choice("URL_AUTH", "sprite", "public"),
        source=source,
        source_url=source_url or None,
        source_ref=text("SOURCE_REF", _URL, "a branch, tag or commit") or None,
        forward_secrets=names,
        keepalive=choice("KEEPALIVE", "on", "off") == "on",
        # A poll slower than ~25 s could miss a sprite's 30 s idle window.
        keepalive_interval=number("KEEPALIVE_INTERVAL", 1, 25),
        keepalive_expire=number("KEEPALIVE_EXPIRE", 5, 3600),
        opencode_prefix=raw["OPENCODE_PREFIX"][0].strip() or None,
    )


def is_variable_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def forwarded_secrets(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Values of the forwarded secret names: environment first, then secrets.env."""
    environ = os.environ if environ is None else environ
    secrets_path = settings.render / SECRETS_FILE
    from_file = (
        read_env_file(secrets_path, secret=True) if secrets_path.exists() else {}
    )
    values: dict[str, str] = {}
    missing = []
    for name in settings.forward_secrets:
        value = environ.get(name) or from_file.get(name)
        if value:
            values[name] = value
        else:
            missing.append(name)
    redact.add_secrets(values.values())
    if missing and not values:
        ui.warn(
            "no secret to forward: set one of "
            + ", ".join(missing)
            + f" (or put it in {secrets_path}) so the agent can reach its model"
        )
    return values


def server_password(provider: str, org: str | None, sandbox: str) -> str:
    """The sandbox's OpenCode password: made once here, kept in a 0600 file."""
    path = password_path(provider, org, sandbox)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        password = ""
    if not password:
        password = secrets.token_urlsafe(32)
        store_password(provider, org, sandbox, password)
    else:
        path.chmod(0o600)
    redact.add_secret(password)
    return password


def store_password(provider: str, org: str | None, sandbox: str, password: str) -> None:
    path = password_path(provider, org, sandbox)
    paths.ensure_private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    path.chmod(0o600)  # in case the file existed with looser bits
    redact.add_secret(password)


def password_path(provider: str, org: str | None, sandbox: str) -> Path:
    return (
        paths.af_remote_config_dir()
        / "passwords"
        / f"{provider}--{org or '-'}--{sandbox}"
    )
