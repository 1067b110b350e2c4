"""The `sprite-env` command of the stand-in, run inside a sandbox.

Everything goes through the management API on /.sprite/api.sock, as the real one does;
`sprite-env curl` hands the socket to the real curl.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from typing import Any
from urllib.parse import quote

from standin._cli import parse_flags
from standin._common import StandinError

API_SOCKET = "/.sprite/api.sock"
CURL_VALUE_FLAGS = {
    "-X",
    "--request",
    "-d",
    "--data",
    "--data-raw",
    "--data-binary",
    "--json",
    "-H",
    "--header",
    "-o",
    "--output",
    "-u",
    "--user",
    "-w",
    "--write-out",
    "-m",
    "--max-time",
    "--connect-timeout",
    "-T",
    "--upload-file",
    "-F",
    "--form",
    "-A",
    "--user-agent",
    "-e",
    "--referer",
    "-b",
    "--cookie",
    "-c",
    "--cookie-jar",
}


class UnixConnection(http.client.HTTPConnection):
    def __init__(self) -> None:
        super().__init__("sprite")

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(API_SOCKET)
        except OSError as exc:
            raise StandinError(
                f"cannot reach the sprite API at {API_SOCKET}: {exc}"
            ) from exc


def request(method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
    conn = UnixConnection()
    payload = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    if response.status >= 400:
        data = response.read()
        try:
            message = json.loads(data).get("error", data.decode())
        except (ValueError, AttributeError):
            message = data.decode(errors="replace").strip()
        raise StandinError(f"{response.status}: {message}")
    return response


def print_json(response: http.client.HTTPResponse) -> None:
    data = response.read()
    if data.strip():
        print(json.dumps(json.loads(data), indent=2))


def split_list(value: str | None) -> list[str]:
    return [item for item in (value or "").split(",") if item]


def services(args: list[str]) -> int:
    opts, positional = parse_flags(
        args,
        {
            "--cmd": ("cmd", "value"),
            "--args": ("args", "value"),
            "--env": ("env", "value"),
            "--dir": ("dir", "value"),
            "--needs": ("needs", "value"),
            "--http-port": ("http_port", "value"),
            "--duration": ("duration", "value"),
            "--no-stream": ("no_stream", "bool"),
        },
    )
    action = positional[0] if positional else ""
    if action == "create" and len(positional) == 2:
        return create_service(positional[1], opts)
    if action in ("list", "ls") and len(positional) == 1:
        print_json(request("GET", "/v1/services"))
        return 0
    if action == "get" and len(positional) == 2:
        print_json(request("GET", f"/v1/services/{quote(positional[1])}"))
        return 0
    if action in ("start", "stop", "restart") and len(positional) == 2:
        print_json(request("POST", f"/v1/services/{quote(positional[1])}/{action}"))
        return 0
    if action == "signal" and len(positional) == 3:
        path = f"/v1/services/{quote(positional[1])}/signal"
        print_json(request("POST", path, {"signal": positional[2]}))
        return 0
    if action == "delete" and len(positional) == 2:
        request("DELETE", f"/v1/services/{quote(positional[1])}").read()
        return 0
    raise StandinError(
        "usage: sprite-env services create|list|get|start|stop|restart|signal|delete"
    )


def create_service(name: str, opts: dict[str, Any]) -> int:
    if not opts.get("cmd"):
        raise StandinError("--cmd is required")
    if opts.get("no_stream") and opts.get("duration"):
        raise StandinError("--duration and --no-stream cannot be used together")
    env = {}
    for pair in split_list(opts.get("env")):
        key, has_value, value = pair.partition("=")
        if not has_value:
            raise StandinError(f"invalid --env entry {pair!r}: expected KEY=VALUE")
        env[key] = value
    body: dict[str, Any] = {
        "cmd": opts["cmd"],
        "args": split_list(opts.get("args")),
        "env": env,
        "dir": opts.get("dir"),
        "needs": split_list(opts.get("needs")),
        "http_port": int(opts["http_port"]) if opts.get("http_port") else None,
    }
    query = (
        "no_stream=true"
        if opts.get("no_stream")
        else (f"duration={quote(opts.get('duration') or '5s')}")
    )
    response = request("PUT", f"/v1/services/{quote(name)}?{query}", body)
    if opts.get("no_stream"):
        print_json(response)
        return 0
    while line := response.readline():
        sys.stdout.write(line.decode())
        sys.stdout.flush()
    return 0


def curl(args: list[str]) -> int:
    """Replace the API path with a URL on the socket and run the real curl."""
    argv = ["curl", "--unix-socket", API_SOCKET]
    previous = ""
    for arg in args:
        takes_value = previous in CURL_VALUE_FLAGS
        if arg.startswith("/") and not takes_value:
            arg = "http://sprite" + arg
        argv.append(arg)
        previous = arg if arg.startswith("-") and "=" not in arg else ""
    try:
        os.execvp("curl", argv)  # noqa: S606 - becoming curl, no shell involved
    except OSError as exc:
        raise StandinError(f"cannot run curl: {exc.strerror}") from None


def main() -> None:
    args = sys.argv[1:]
    try:
        if args[:1] == ["services"]:
            code = services(args[1:])
        elif args[:1] == ["curl"]:
            code = curl(args[1:])
        else:
            raise StandinError(
                "usage: sprite-env services ... | sprite-env curl [ARGS] PATH"
            )
    except StandinError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        code = exc.exit_code
    except (http.client.HTTPException, OSError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        code = 1
    sys.stdout.flush()
    os._exit(code)
