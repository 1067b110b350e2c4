"""``init`` and ``update``: render a provider's template into the user's project.

The templates ship inside the package, not in a git repository with version tags,
so Copier's own ``update`` cannot find the old template version to diff against.
Instead every render keeps its pristine copy in ``.af-remote-base/``; ``update``
renders the new template with the saved answers and merges each file three ways
(pristine render, the user's file, new render) with ``git merge-file``.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from af_remote import native, project, ui
from af_remote.errors import AfRemoteError, UsageError

BASE_DIR = ".af-remote-base"
SECRETS_FILE = "secrets.env"


@dataclass
class UpdateReport:
    updated: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def init(*, provider: str, defaults: bool, data: Sequence[str], force: bool) -> int:
    template = project.template(provider)
    root = project.root()
    destination = project.render_dir(root, provider)
    if destination.exists() and any(destination.iterdir()) and not force:
        raise AfRemoteError(
            f"{destination} already exists",
            hint="pass --force to overwrite it, or run `af-remote update` to merge "
            "template changes into it",
        )
    answers = parse_data(data, template)
    answers.setdefault("project_slug", project.slug(root.name))
    interactive = not defaults and sys.stdin.isatty() and sys.stdout.isatty()
    if not defaults and not interactive:
        ui.progress("no terminal to ask questions on: using the defaults")

    with tempfile.TemporaryDirectory(prefix="af-remote-render-") as scratch:
        rendered = Path(scratch) / provider
        _copy_template(template, rendered, answers, interactive=interactive)
        # With --force the template's files are overwritten, but whatever else is in
        # the directory (the user's secrets.env, state) is the user's and stays.
        shutil.rmtree(destination / BASE_DIR, ignore_errors=True)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(rendered, destination, symlinks=True, dirs_exist_ok=True)
        _save_base(rendered, destination)

    files = sorted(_render_files(destination))
    ui.out(f"Rendered {provider} into {destination.relative_to(root)}/:")
    for name in files:
        ui.out(f"  {name}")
    ui.out("")
    ui.out("Next:")
    ui.out(f"  $EDITOR {destination.relative_to(root)}/.env      # settings")
    ui.out(
        f"  git add {project.RENDER_DIR} && git commit -m 'Add af-remote {provider}'"
    )
    ui.out('  af-remote up --prompt "..."')
    return 0


def update(*, provider: str | None) -> int:
    root = project.root()
    provider = project.pick_provider(root, provider)
    template = project.template(provider)
    destination = project.render_dir(root, provider)
    _require_committed(root, destination)
    answers = load_answers(destination / project.ANSWERS_FILE)
    answers.setdefault("project_slug", project.slug(root.name))
    base = destination / BASE_DIR
    if not base.is_dir():
        raise AfRemoteError(
            f"{base} is missing, so there is nothing to merge against",
            hint=f"re-render with `af-remote init --provider {provider} --force`",
        )

    with tempfile.TemporaryDirectory(prefix="af-remote-render-") as scratch:
        new = Path(scratch) / provider
        _copy_template(template, new, answers, interactive=False)
        report = merge_render(base=base, ours=destination, new=new)
        shutil.rmtree(base)
        _save_base(new, destination)
        # The new template may ask questions the old one did not; record the
        # defaults they were given so that the next update reuses them.
        shutil.copy2(new / project.ANSWERS_FILE, destination / project.ANSWERS_FILE)

    _print_report(report, destination.relative_to(root))
    if report.conflicts:
        raise AfRemoteError(
            f"{len(report.conflicts)} file(s) have conflicts: "
            + ", ".join(report.conflicts),
            hint="resolve the <<<<<<< blocks, then commit",
        )
    return 0


def parse_data(pairs: Iterable[str], template: Path) -> dict[str, Any]:
    """``KEY=VALUE`` answers, refusing keys the template does not ask.

    Numbers and yes/no answers are converted here: Copier would turn any word it
    does not know into ``true`` and report a bad number without naming the question.
    """
    questions = _questions(template)
    answers: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--data {pair!r} is not KEY=VALUE")
        if key not in questions:
            raise UsageError(
                f"--data {key}: the {template.name} template has no such question",
                hint="known: " + ", ".join(sorted(questions)),
            )
        answers[key] = _typed_answer(key, value, questions[key].get("type"))
    return answers


_YES_NO = {
    **dict.fromkeys(("true", "yes", "y", "on", "1"), True),
    **dict.fromkeys(("false", "no", "n", "off", "0"), False),
}


def _typed_answer(key: str, value: str, kind: object) -> Any:
    if kind == "int":
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise UsageError(f"--data {key}: {value!r} is not a whole number") from None
    if kind == "bool":
        try:
            return _YES_NO[value.strip().lower()]
        except KeyError:
            raise UsageError(
                f"--data {key}: {value!r} is not yes or no",
                hint="use true/false, yes/no or on/off",
            ) from None
    return value


def load_answers(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise AfRemoteError(f"cannot read {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise AfRemoteError(f"{path} is not a mapping of answers")
    return {key: value for key, value in loaded.items() if not key.startswith("_")}


def merge_render(*, base: Path, ours: Path, new: Path) -> UpdateReport:
    """Merge ``new`` into ``ours`` file by file; ``base`` is the common ancestor."""
    report = UpdateReport()
    names = _render_files(base) | _render_files(new)
    for name in sorted(names):
        base_file, our_file, new_file = base / name, ours / name, new / name
        if not new_file.exists():
            if our_file.exists() and filecmp.cmp(our_file, base_file, shallow=False):
                our_file.unlink()
                report.removed.append(name)
            elif our_file.exists():
                report.kept.append(name)
            continue
        if not our_file.exists():
            if base_file.exists():
                # The user deleted it; the deletion stands.
                report.kept.append(name)
            else:
                our_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(new_file, our_file)
                report.added.append(name)
            continue
        if filecmp.cmp(our_file, new_file, shallow=False):
            continue
        if base_file.exists() and filecmp.cmp(our_file, base_file, shallow=False):
            shutil.copy2(new_file, our_file)
            report.updated.append(name)
            continue
        if base_file.exists() and filecmp.cmp(new_file, base_file, shallow=False):
            continue  # only the user changed it
        if _merge_file(our_file, base_file if base_file.exists() else None, new_file):
            report.conflicts.append(name)
        else:
            report.updated.append(name)
    return report


def _merge_file(ours: Path, base: Path | None, new: Path) -> bool:
    """Merge in place with ``git merge-file``; True when conflicts were left inline."""
    with tempfile.TemporaryDirectory() as scratch:
        if base is None:
            base = Path(scratch) / "empty"
            base.write_bytes(b"")
        argv = [
            "git",
            "merge-file",
            "-L",
            "yours",
            "-L",
            "previous template",
            "-L",
            "new template",
            str(ours),
            str(base),
            str(new),
        ]
        result = native.run(argv, check=False)
    if result.returncode < 0 or result.returncode > 127:
        raise AfRemoteError(f"git merge-file failed on {ours}: {result.stderr.strip()}")
    return result.returncode > 0


def _copy_template(
    template: Path, destination: Path, answers: dict[str, Any], *, interactive: bool
) -> None:
    import copier
    from copier.errors import CopierAnswersInterrupt, CopierError

    try:
        copier.run_copy(
            str(template),
            str(destination),
            data=answers,
            defaults=not interactive,
            quiet=True,
            overwrite=True,
            unsafe=False,
        )
    except CopierAnswersInterrupt:
        raise KeyboardInterrupt from None
    except ValueError as error:
        # Copier reports a failed validator as ValueError("Validation error for
        # question 'x': ..."): a bad answer, so nothing was written.
        message = " ".join(str(error).split())
        raise UsageError(
            message.replace("Validation error for question", "invalid")
        ) from error
    except CopierError as error:
        raise AfRemoteError(f"rendering {template.name} failed: {error}") from error


def _save_base(rendered: Path, destination: Path) -> None:
    base = destination / BASE_DIR
    shutil.copytree(
        rendered,
        base,
        ignore=shutil.ignore_patterns(project.ANSWERS_FILE, BASE_DIR),
        dirs_exist_ok=True,
    )


def _render_files(directory: Path) -> set[str]:
    """Relative paths of the files a render consists of.

    The answers file, the pristine copy and the user's secrets are not part of it.
    """
    if not directory.is_dir():
        return set()
    skipped = {project.ANSWERS_FILE, SECRETS_FILE, BASE_DIR}
    return {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path.relative_to(directory).parts[0] not in skipped
    }


def _questions(template: Path) -> dict[str, dict[str, Any]]:
    """The template's questions by key, each with its settings (type, help, ...)."""
    import yaml

    config = yaml.safe_load((template / "copier.yml").read_text(encoding="utf-8"))
    return {
        key: settings if isinstance(settings, dict) else {"default": settings}
        for key, settings in config.items()
        if not key.startswith("_")
    }


def _require_committed(root: Path, destination: Path) -> None:
    relative = str(destination.relative_to(root))
    inside = native.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=root, check=False
    )
    if inside.returncode != 0:
        raise AfRemoteError(
            f"{root} is not a git repository",
            hint="update merges into your files; run `git init` and commit "
            f"{relative} first so that the merge can be reviewed and undone",
        )
    tracked = native.run(["git", "ls-files", "--", relative], cwd=root, check=False)
    dirty = native.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", relative],
        cwd=root,
        check=False,
    )
    if not tracked.stdout.strip() or dirty.stdout.strip():
        raise AfRemoteError(
            f"{relative} has changes that are not committed",
            hint=f"commit it first (git add {relative} && git commit) so that the "
            "merge can be reviewed and undone",
        )


def _print_report(report: UpdateReport, relative: Path) -> None:
    rows = (
        ("updated", report.updated),
        ("added", report.added),
        ("removed", report.removed),
        ("kept (yours)", report.kept),
        ("CONFLICT", report.conflicts),
    )
    if not any(names for _, names in rows):
        ui.out(f"{relative}/ is up to date with the template")
        return
    for label, names in rows:
        for name in names:
            ui.out(f"  {label:<13} {relative}/{name}")
    if not report.conflicts:
        ui.out("Review with `git diff`, then commit.")
