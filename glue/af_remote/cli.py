"""The ``af-remote`` command line.

Each subcommand parses its flags and calls one function in the module that owns the
work; those modules (and copier, httpx, plumbum behind them) are imported only when
their command runs, so that ``--help`` and ``ls`` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from af_remote import __version__, redact, ui
from af_remote.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    AfRemoteError,
)

PROVIDERS = ("sprites", "local")

DESCRIPTION = """\
Start an OpenCode agent in a sandbox, record it where Aetherflow (af) looks, and
attach your terminal to it. Providers: sprites (Fly.io Sprites, through the `sprite`
CLI) and local (a directory on this machine; needs only Node.js).
"""

EPILOG = """\
a day with af-remote:
  af-remote init --provider sprites       render .af-remote/sprites/ into this project
  af-remote up --prompt "fix the flaky login test"
  af-remote ls                            spawns of this machine, newest first
  af-remote attach                        the OpenCode TUI on the newest spawn
  af-remote down --destroy                stop the agent and delete the sandbox

exit codes:
  0 ok, 1 error, 2 usage, 3 not ready yet, 130 interrupted

Run `af-remote COMMAND -h` for a command's flags. -v shows every native command
af-remote runs, so each step can be repeated by hand.
"""

Handler = Callable[[argparse.Namespace], int]


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log every native command and its output; tracebacks on errors",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print results and errors only",
    )


def _provider_flag(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        required=required,
        help="which render to use"
        + ("" if required else " (default: the only one rendered in this project)"),
    )


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON document on stdout instead of text (see docs/json.md)",
    )


def _cmd_init(args: argparse.Namespace) -> int:
    from af_remote import render

    return render.init(
        provider=args.provider,
        defaults=args.defaults,
        data=args.data,
        force=args.force,
    )


def _cmd_update(args: argparse.Namespace) -> int:
    from af_remote import render

    return render.update(provider=args.provider)


def _cmd_up(args: argparse.Namespace) -> int:
    from af_remote import spawning

    return spawning.up(args)


def _cmd_ls(args: argparse.Namespace) -> int:
    from af_remote import listing

    return listing.ls(show_all=args.all, as_json=args.json)


def _cmd_status(args: argparse.Namespace) -> int:
    from af_remote import spawning

    return spawning.status(args.id, provider=args.provider, as_json=args.json)


def _cmd_down(args: argparse.Namespace) -> int:
    from af_remote import spawning

    return spawning.down(args.id, provider=args.provider, destroy=args.destroy)


def _cmd_attach(args: argparse.Namespace) -> int:
    from af_remote import attach

    return attach.attach(args.id, provider=args.provider)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="af-remote",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    _common(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, summary: str, handler: Handler, details: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary + ("\n\n" + details if details else ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(sub)
        sub.set_defaults(handler=handler)
        return sub

    init = command(
        "init",
        "render a provider's scripts and settings into .af-remote/PROVIDER/",
        _cmd_init,
        "The rendered files are yours: edit them by hand, then pull template\n"
        "changes later with `af-remote update` (a three-way merge keeps your edits).\n"
        "Secrets are never rendered: put them in the environment or in the render's\n"
        "git-ignored secrets.env.",
    )
    _provider_flag(init, required=True)
    init.add_argument(
        "--defaults", action="store_true", help="answer every question with its default"
    )
    init.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="answer one question (repeatable); see docs/init.md for the keys",
    )
    init.add_argument(
        "--force", action="store_true", help="overwrite an existing render"
    )

    update = command(
        "update",
        "merge template changes into the render, keeping your hand edits",
        _cmd_update,
        "Needs the project to be a git repository with the render committed.\n"
        "Conflicting hunks are left inline with <<<<<<< markers and listed; the\n"
        "command then exits 1.",
    )
    _provider_flag(update)

    up = command(
        "up",
        "start an agent in the sandbox (creating the sandbox when needed)",
        _cmd_up,
        "Without a prompt on a healthy sandbox, changes nothing and reports the\n"
        "running spawn. With a prompt, starts a new agent on its own git worktree\n"
        "and branch af/SPAWN-ID. The prompt is data: it reaches the agent byte for\n"
        "byte and is never seen by a shell.",
    )
    _provider_flag(up)
    prompt = up.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="what the agent should do")
    prompt.add_argument(
        "--prompt-file", metavar="FILE", help="read the prompt from FILE (- for stdin)"
    )
    up.add_argument("--title", metavar="T", help="the session's title")
    up.add_argument(
        "--name", metavar="SANDBOX", help="use (or create) this sandbox instead"
    )
    up.add_argument(
        "--request-id",
        metavar="KEY",
        help="idempotency key: the same key returns the same spawn",
    )
    up.add_argument(
        "--dry-run",
        action="store_true",
        help="print the native commands and uploads, change nothing",
    )
    _json_flag(up)

    ls = command("ls", "list spawns from the records (no network)", _cmd_ls)
    ls.add_argument(
        "--all", action="store_true", help="include terminated and failed spawns"
    )
    _json_flag(ls)

    status = command(
        "status",
        "ask the sandbox and the server how a spawn is doing",
        _cmd_status,
    )
    status.add_argument("id", nargs="?", help="spawn id, session id or unique prefix")
    _provider_flag(status)
    _json_flag(status)

    attach = command(
        "attach",
        "open the OpenCode TUI on a spawn's session; quit the TUI to detach",
        _cmd_attach,
    )
    attach.add_argument(
        "id",
        nargs="?",
        help="spawn id, session id or unique prefix (default: the newest running)",
    )
    _provider_flag(attach)

    down = command(
        "down",
        "abort a spawn's agent; with --destroy, delete its sandbox",
        _cmd_down,
    )
    down.add_argument("id", nargs="?", help="spawn id, session id or unique prefix")
    _provider_flag(down)
    down.add_argument(
        "--destroy",
        action="store_true",
        help="destroy the sandbox and mark all its spawns terminated",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    ui.configure(verbose=verbose, quiet=getattr(args, "quiet", False))
    redact.add_environment_secrets(os.environ)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    try:
        return handler(args)
    except AfRemoteError as error:
        if verbose:
            ui.log.exception("details")
        ui.error(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        ui.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:
        # A bug, not a user error: say so in one line, the traceback with -v.
        if verbose:
            ui.log.exception("unexpected error")
        ui.error(
            f"unexpected {type(error).__name__}: {error} (run with -v for details)"
        )
        return EXIT_ERROR
