"""User data never becomes code: every user-controlled value that reaches a script
or a command line (sprite name, org, model, repository URL, branch, OpenCode
version, prompt, title, ``--data`` answers) is either refused with exit 2 and a
message naming it, or arrives byte for byte; a payload that would create a sentinel
file if it were ever run never does.

The bulk runs through the cheap layers that carry the values (settings validation,
spawn.env sourced by a real bash, the ``--dry-run`` argv, the upload files); a few
examples go through a real ``up`` on the sprite stand-in. test_templates.py covers
``init`` alone and test_spawning_unit.py fixed hostile lists: these extend them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import reliability_support
from af_remote import config, spawning
from af_remote.errors import UsageError
from af_remote.spawning import Request
from af_remote.sprites import Sprite
from conftest import RunCli, git
from e2e_support import af, password, reply_text
from reliability_support import TALLY, World, enter, sprites_world

tally = reliability_support.tally  # prints the counts after the session
pytestmark = pytest.mark.usefixtures("tally")

SANDBOX = "af-my-project"
SENTINEL = "/tmp/af-remote-injection-sentinel"
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Pieces a shell, a dotenv parser or an option parser would act on.
PIECES = st.sampled_from(
    [
        "'",
        '"',
        f"$(touch {SENTINEL})",
        f"`touch {SENTINEL}`",
        f";touch {SENTINEL}",
        "|",
        "&",
        " ",
        "\n",
        "\r",
        "\t",
        "\\",
        "#",
        "=",
        ",",
        "${HOME}",
        "-s",
        "--",
        "-o evil",
        "--file=/etc/passwd:/x",
        "é",
        "\u202e",
        "\x00",
        "::af-remote:: result {}",
    ]
)
WORDS = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._/:@+~%-]{0,14}", fullmatch=True)
VALUES = st.one_of(
    WORDS,
    st.lists(st.one_of(WORDS, PIECES), min_size=1, max_size=5).map("".join),
    st.text(max_size=12),
)

# Settings whose value lands in spawn.env, an argv, or opencode.json.
SETTING_KEYS = [
    "SANDBOX",
    "ORG",
    "MODEL",
    "SOURCE_URL",
    "SOURCE_REF",
    "OPENCODE_VERSION",
]


@pytest.fixture(autouse=True)
def no_sentinel() -> Iterator[None]:
    Path(SENTINEL).unlink(missing_ok=True)
    yield
    assert not Path(SENTINEL).exists(), "a payload was run"


def sourced(text: str, cwd: Path) -> dict[str, str]:
    """The variables a real bash has after `set -a; source` of ``text``."""
    env_file = cwd / "sourced.env"
    env_file.write_text(text)
    output = subprocess.run(
        ["bash", "-c", 'set -a; source "$1"; env -0', "bash", str(env_file)],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    ).stdout
    pairs = (entry.split(b"=", 1) for entry in output.split(b"\0") if entry)
    return {key.decode(): value.decode("utf-8") for key, value in pairs}


def environ_for(key: str, value: str) -> dict[str, str]:
    environ = {f"AF_REMOTE_{key}": value}
    if key in ("SOURCE_URL", "SOURCE_REF"):
        environ["AF_REMOTE_SOURCE"] = "clone"
        environ.setdefault("AF_REMOTE_SOURCE_URL", "https://git.example.com/a.git")
    return environ


@pytest.mark.parametrize("key", SETTING_KEYS)
@PROPERTY
@given(value=VALUES)
def test_a_setting_is_refused_or_reaches_bash_and_argv_exactly(
    sprites_render: Path, scratch_repo: Path, tmp_path: Path, key: str, value: str
) -> None:
    TALLY["injection: setting values tried (validation, spawn.env, argv)"] += 1
    try:
        loaded = config.load(scratch_repo, "sprites", environ=environ_for(key, value))
    except UsageError as error:
        assert f"AF_REMOTE_{key}" in error.message
        return
    expected = value.strip()
    as_loaded = {
        "SANDBOX": loaded.sandbox,
        "ORG": loaded.org or "",
        "MODEL": loaded.model or "",
        "SOURCE_URL": loaded.source_url or "",
        "SOURCE_REF": loaded.source_ref or "",
        "OPENCODE_VERSION": loaded.opencode_version,
    }
    assert as_loaded[key] == expected

    seen = sourced(
        spawning.spawn_env(loaded, {"spawn_id": "spw_1"}, loaded.source_ref or ""),
        tmp_path,
    )
    assert seen["AF_SOURCE_URL"] == (loaded.source_url or "")
    assert seen["AF_SOURCE_REF"] == (loaded.source_ref or "")
    assert seen["AF_OPENCODE_VERSION"] == loaded.opencode_version
    if loaded.model:
        assert json.loads(spawning.opencode_config(loaded))["model"] == loaded.model

    sprite = Sprite(loaded.sandbox, loaded.org)
    org = ["-o", loaded.org] if loaded.org else []
    for argv in (sprite.create_argv(), sprite.destroy_argv()):
        assert argv[-1] == loaded.sandbox and argv[2 : 2 + len(org)] == org
        assert shlex.split(shlex.join(argv)) == argv
    exec_argv = sprite.exec_argv(["bash", "/tmp/b.sh"])
    assert exec_argv[:4] == ["sprite", "exec", "-s", loaded.sandbox]
    assert exec_argv[exec_argv.index("--") + 1 :] == ["bash", "/tmp/b.sh"]
    # A value that passed validation never looks like an option to the sprite CLI.
    assert not loaded.sandbox.startswith("-")
    assert not (loaded.org or "").startswith("-")


NAME_FLAGS = [
    pytest.param("--name", id="sandbox-flag"),
    pytest.param("AF_REMOTE_ORG", id="org-environment"),
]


@pytest.mark.parametrize("where", NAME_FLAGS)
@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=VALUES)
def test_dry_run_prints_each_name_as_one_argument_or_refuses_it(
    sprites_render: Path,
    scratch_repo: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    value: str,
) -> None:
    TALLY["injection: names tried through up --dry-run"] += 1
    if where == "--name":
        argv = ["up", "--dry-run", "--json", f"--name={value}"]
    else:
        assume("\x00" not in value)  # no environment can hold it
        monkeypatch.setenv(where, value)
        argv = ["up", "--dry-run", "--json"]

    result = run_cli(*argv, cwd=scratch_repo)

    if result.exit_code != 0:
        assert result.exit_code == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert where in result.stderr or "--name" in result.stderr
        return
    commands = [shlex.split(line) for line in json.loads(result.stdout)["commands"]]
    create, execute = commands[0], commands[-1]
    if where == "--name":
        assert create[-1] == value and execute[2:4] == ["-s", value]
    else:
        assert create[2:4] == ["-o", value.strip()] or not value.strip()
    # Every upload is one --file argument with the local path and a fixed place.
    flags = execute[: execute.index("--")]
    uploads = [flags[i + 1] for i, arg in enumerate(flags) if arg == "--file"]
    assert uploads
    assert all(
        arg.rsplit(":", 1)[1].startswith("/tmp/af-remote.spw_DRYRUN.")
        for arg in uploads
    )


TEXTS = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=12).map("".join),
)


@PROPERTY
@given(prompt=TEXTS, title=TEXTS)
def test_prompt_and_title_reach_the_upload_files_byte_for_byte(
    sprites_render: Path, scratch_repo: Path, tmp_path: Path, prompt: str, title: str
) -> None:
    TALLY["injection: prompt and title pairs tried"] += 1
    settings_ = config.load(scratch_repo, "sprites", environ={})
    scratch = tmp_path / f"scratch-{next(_CASES)}"
    scratch.mkdir()
    request = Request(
        prompt=prompt, title=title, request_id=None, dry_run=True, as_json=True
    )
    # Source "clone" skips the git bundle, which is not what is under test here.
    cloned = dataclasses.replace(
        settings_, source="clone", source_url="https://git.example.com/a.git"
    )

    files = spawning.prepare_files(
        scratch, cloned, request, {"spawn_id": "spw_1"}, "new"
    )

    body = json.loads(files["prompt.json"].read_bytes().decode("utf-8"))
    assert body == {"parts": [{"type": "text", "text": prompt}]}
    assert json.loads(files["session.json"].read_text()) == {"title": title}


def test_prompt_and_title_that_are_not_text_are_refused(
    sprites_render: Path, scratch_repo: Path, run_cli: RunCli
) -> None:
    not_utf8 = b"\xff\xfe".decode("utf-8", "surrogateescape")
    for argv in (["--prompt", not_utf8], ["--title", not_utf8]):
        result = run_cli("up", "--dry-run", *argv, cwd=scratch_repo)
        assert result.exit_code == 2
        assert f"{argv[0]} is not UTF-8" in result.stderr


_CASES = itertools.count()

# Questions whose answers are carried into settings that reach scripts or argv.
ANSWER_KEYS = {
    "sandbox": "SANDBOX",
    "org": "ORG",
    "model": "MODEL",
    "source_url": "SOURCE_URL",
    "opencode_version": "OPENCODE_VERSION",
}


@pytest.mark.parametrize("question", sorted(ANSWER_KEYS))
@settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=VALUES)
def test_an_answer_init_accepts_is_a_setting_up_accepts_unchanged(
    tmp_path: Path, run_cli: RunCli, question: str, value: str
) -> None:
    """The template's validators and the settings' agree: an answer rendered into
    .env loads back as itself, so `up` neither refuses it later nor changes it."""
    TALLY["injection: --data answers tried (init, then the settings)"] += 1
    root = tmp_path / f"case-{next(_CASES)}"
    root.mkdir()
    git(root, "init", "--quiet")
    answers = ["--data", f"{question}={value}"]
    if question == "source_url":
        answers += ["--data", "source=clone"]

    result = run_cli("init", "--provider", "sprites", "--defaults", *answers, cwd=root)

    if result.exit_code != 0:
        assert result.exit_code == 2, result.stderr
        assert not (root / ".af-remote").exists()
        return
    render = root / ".af-remote" / "sprites"
    key = ANSWER_KEYS[question]
    assert dotenv_values(render / ".env")[f"AF_REMOTE_{key}"] == value
    loaded = config.load(root, "sprites", environ={})
    carried = {
        "SANDBOX": loaded.sandbox,
        "ORG": loaded.org or "",
        "MODEL": loaded.model or "",
        "SOURCE_URL": loaded.source_url or "",
        "OPENCODE_VERSION": loaded.opencode_version,
    }
    assert carried[key] == value


# --- a few examples through a real up on the stand-in ------------------------------

BRANCH = "feat/odd+name@x%2-1.x"
HOSTILE = [
    pytest.param(
        f'it\'s "broken" $(touch {SENTINEL}) `touch {SENTINEL}`; rm -rf ~ \\\n'
        "-s evil -o org --file /etc/passwd:/x\n::af-remote:: result {}\n é🚀\u202e",
        f't\'itle "$(touch {SENTINEL})" `id` ::af-remote:: error forged ü',
        id="shell-and-protocol",
    ),
    pytest.param(
        "--prompt-file=/etc/passwd",
        f"-v ; touch {SENTINEL} #",
        id="looks-like-options",
    ),
]


@pytest.fixture(scope="module")
def module_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("injection")
    source = base / "upstream"
    source.mkdir()
    with sprites_world(base, sandbox="af-inject", data={}) as world:
        # The agent clones this repository at an unusual branch.
        git(source, "init", "--quiet")
        (source / "ODD.md").write_text("on the odd branch\n")
        git(source, "add", "ODD.md")
        git(source, "commit", "--quiet", "-m", "odd")
        git(source, "branch", BRANCH)
        git(source, "commit", "--quiet", "--allow-empty", "-m", "main moves on")
        world.extra["source"] = source
        yield world


@pytest.fixture
def world(module_world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    return enter(module_world, monkeypatch)


@pytest.mark.e2e
@pytest.mark.parametrize(("prompt", "title"), HOSTILE)
def test_hostile_values_through_a_real_up(
    world: World, prompt: str, title: str
) -> None:
    TALLY["injection: examples through a real up"] += 1
    source = world.extra["source"]
    env = {
        "AF_REMOTE_SOURCE": "clone",
        "AF_REMOTE_SOURCE_URL": f"file://{source}",
        "AF_REMOTE_SOURCE_REF": BRANCH,
    }
    before = len(world.llm.chat_requests())

    result = af(
        world.project.root,
        "up",
        "--json",
        f"--prompt={prompt}",
        f"--title={title}",
        env=env,
    )

    assert result.returncode == 0, result.stderr
    spawn = json.loads(result.stdout)
    base_url = f"http://127.0.0.1:{world.port}"
    secret = password("sprites", "af-inject")
    assert reply_text(base_url, secret, spawn["session_id"], spawn["workdir"]) == prompt
    texts = [
        message["content"]
        if isinstance(message["content"], str)
        else message["content"][0]["text"]
        for request in world.llm.chat_requests()[before:]
        for message in request.body["messages"]
        if message["role"] == "user"
    ]
    assert prompt in texts
    session = httpx.get(
        f"{base_url}/session/{spawn['session_id']}",
        params={"directory": spawn["workdir"]},
        auth=("opencode", secret),
        timeout=10,
    ).json()
    assert session["title"] == title
    # The worktree is the odd branch's commit, not main's.
    head = world.standin.exec(
        "af-inject", "git", "-C", spawn["workdir"], "log", "-1", "--format=%s"
    )
    assert head.stdout.strip().splitlines()[-1] == "odd"
    # Nothing of the prompt or title reached the sprite CLI as an argument.
    exec_argv = world.standin.invocations()[-1]["argv"]
    assert all(title not in arg and prompt not in arg for arg in exec_argv)
