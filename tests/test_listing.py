"""`af-remote ls` and finding the spawn a command is about, from the records only."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from af_remote import listing, paths
from af_remote.errors import NotReadyError, UsageError
from af_remote.records import Record, Registry
from conftest import SPAWN_KEYS, RunCli

PROJECT = "/home/me/src/shop"
OTHER_PROJECT = "/home/me/src/blog"
HEADER = ["SPAWN", "STATE", "PROVIDER", "SANDBOX", "SESSION", "CREATED", "TITLE"]


def spawn(
    registry: Registry,
    *,
    state: str,
    provider: str = "sprites",
    sandbox: str = "af-shop",
    session_id: str | None = None,
    title: str = "",
    project: str = PROJECT,
    **fields: Any,
) -> Record:
    """A spawn recorded the way `up` records one, moved to ``state``."""
    created = registry.create_spawn(
        provider=provider,
        sandbox=sandbox,
        request_id=fields.pop("request_id", None),
        af_remote={"org": None, "project": project, "title": title},
    )
    return registry.update_spawn(
        created["spawn_id"], state=state, session_id=session_id, **fields
    )


def table(stdout: str) -> list[list[str]]:
    """Rows of the ls table, cells split on the column gaps (two or more spaces)."""
    return [re.split(r" {2,}", line) for line in stdout.splitlines()]


def columns(line: str, cells: list[str]) -> list[int]:
    """Where each cell of ``line`` starts, searching left to right."""
    starts, position = [], 0
    for cell in cells:
        position = line.index(cell, position)
        starts.append(position)
        position += len(cell)
    return starts


def write_spawns(records: list[Record]) -> None:
    """The spawn file as another writer might leave it."""
    directory = paths.registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    document = {"schema_version": 1, "records": records}
    (directory / "remote_spawns.json").write_text(json.dumps(document))


def record(spawn_id: str, **fields: Any) -> Record:
    extras = {"project": PROJECT, "title": fields.pop("title", "")}
    return {
        "spawn_id": spawn_id,
        "provider": "sprites",
        "provider_sandbox_id": "af-shop",
        "session_id": None,
        "state": "running",
        "created_at": "2026-12-03T10:00:00.000000Z",
        "af_remote": extras,
        **fields,
    }


# --- ls ----------------------------------------------------------------------------


def test_ls_lists_active_spawns_newest_first_in_aligned_columns(
    run_cli: RunCli, tmp_path: Path
) -> None:
    registry = Registry()
    running = spawn(registry, state="running", session_id="ses_a1", title="fix login")
    spawn(registry, state="terminated", session_id="ses_t1", title="old work")
    spawn(registry, state="failed", title="broken")
    starting = spawn(registry, state="spawning", sandbox="af-other", title="add tests")

    result = run_cli("ls", cwd=tmp_path)

    assert result.exit_code == 0, result.stderr
    created = {
        record["spawn_id"]: record["created_at"][:19].replace("T", " ")
        for record in (running, starting)
    }
    assert table(result.stdout) == [
        HEADER,
        [
            starting["spawn_id"],
            "spawning",
            "sprites",
            "af-other",
            "-",
            created[starting["spawn_id"]],
            "add tests",
        ],
        [
            running["spawn_id"],
            "running",
            "sprites",
            "af-shop",
            "ses_a1",
            created[running["spawn_id"]],
            "fix login",
        ],
    ]
    lines = result.stdout.splitlines()
    starts = columns(lines[0], HEADER)
    for line, row in zip(lines[1:], table(result.stdout)[1:], strict=True):
        assert columns(line, row) == starts, line


def test_ls_all_includes_terminated_and_failed(run_cli: RunCli, tmp_path: Path) -> None:
    registry = Registry()
    states = ["running", "terminated", "failed", "unknown", "requested"]
    made = [spawn(registry, state=state) for state in states]

    result = run_cli("ls", "--all", cwd=tmp_path)

    rows = table(result.stdout)[1:]
    assert [row[0] for row in rows] == [s["spawn_id"] for s in reversed(made)]
    assert [row[1] for row in rows] == list(reversed(states))
    active = table(run_cli("ls", cwd=tmp_path).stdout)[1:]
    assert [row[1] for row in active] == ["requested", "unknown", "running"]


def test_ls_json_has_the_documented_shape(run_cli: RunCli, tmp_path: Path) -> None:
    registry = Registry()
    running = spawn(
        registry,
        state="running",
        session_id="ses_a1",
        title="fix login",
        request_id="req-1",
        server_ref="http://127.0.0.1:4096",
        af_remote={"server_port": 8080, "workdir": "/w/spw", "branch": "af/spw"},
    )
    spawn(registry, state="failed", last_error="bootstrap failed: no npm")

    result = run_cli("ls", "--json", cwd=tmp_path)

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["spawns"]
    assert document["spawns"] == [
        {
            "spawn_id": running["spawn_id"],
            "provider": "sprites",
            "sandbox": "af-shop",
            "org": None,
            "state": "running",
            "session_id": "ses_a1",
            "server_ref": "http://127.0.0.1:4096",
            "server_port": 8080,
            "workdir": "/w/spw",
            "branch": "af/spw",
            "title": "fix login",
            "project": PROJECT,
            "request_id": "req-1",
            "last_error": None,
            "created_at": running["created_at"],
            "updated_at": running["updated_at"],
        }
    ]
    everything = json.loads(run_cli("ls", "--all", "--json", cwd=tmp_path).stdout)
    assert [s["state"] for s in everything["spawns"]] == ["failed", "running"]
    assert everything["spawns"][0]["last_error"] == "bootstrap failed: no npm"
    assert all(set(s) == SPAWN_KEYS for s in everything["spawns"])


def test_ls_of_nothing(run_cli: RunCli, tmp_path: Path) -> None:
    assert run_cli("ls", cwd=tmp_path).stdout == (
        "No spawns (--all includes terminated and failed ones).\n"
    )
    assert run_cli("ls", "--all", cwd=tmp_path).stdout == "No spawns.\n"
    assert json.loads(run_cli("ls", "--json", cwd=tmp_path).stdout) == {"spawns": []}
    assert not paths.registry_dir().exists()  # listing creates nothing


def test_ls_tolerates_records_of_other_writers(run_cli: RunCli, tmp_path: Path) -> None:
    bare = {
        "spawn_id": "spw_bare",
        "provider": "local",
        "state": "running",
        "future_field": {"x": 1},
    }
    write_spawns(
        [
            bare,
            {**record("spw_modal"), "provider": "modal"},
            {"provider": "sprites", "state": "running"},  # no spawn id
            {**record("spw_null"), "af_remote": None, "created_at": None},
        ]
    )

    result = run_cli("ls", cwd=tmp_path)
    as_json = json.loads(run_cli("ls", "--json", cwd=tmp_path).stdout)

    assert result.exit_code == 0, result.stderr
    rows = table(result.stdout)
    assert sorted(row[0] for row in rows[1:]) == ["spw_bare", "spw_null"]
    bare_row = next(row for row in rows if row[0] == "spw_bare")
    assert bare_row[:3] == ["spw_bare", "running", "local"]
    assert bare_row[-1] == "-"  # no session yet
    by_id = {s["spawn_id"]: s for s in as_json["spawns"]}
    assert set(by_id) == {"spw_bare", "spw_null"}
    assert by_id["spw_bare"] == {
        **dict.fromkeys(SPAWN_KEYS),
        "spawn_id": "spw_bare",
        "provider": "local",
        "state": "running",
    }


def test_ls_tolerates_extras_that_are_not_an_object(
    run_cli: RunCli, tmp_path: Path
) -> None:
    write_spawns([{**record("spw_odd"), "af_remote": "dropped"}])
    result = run_cli("ls", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert table(result.stdout)[1][0] == "spw_odd"


def test_ls_reports_a_registry_it_cannot_read(run_cli: RunCli, tmp_path: Path) -> None:
    directory = paths.registry_dir()
    directory.mkdir(parents=True)
    (directory / "remote_spawns.json").write_text("{not json")
    result = run_cli("ls", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"af-remote: error: {directory / 'remote_spawns.json'} is not valid JSON"
    )
    assert len(result.stderr.splitlines()) == 1


# --- resolve ------------------------------------------------------------------------


@pytest.fixture
def known() -> Registry:
    write_spawns(
        [
            record("spw_0aaa1", session_id="ses_alpha"),
            record("spw_0aaa2", session_id="ses_alphabet", state="spawning"),
            record("spw_0bbb1", state="requested"),
            record("spw_0ccc1", session_id="ses_gone", state="terminated"),
            record("spw_0ddd1", state="failed", last_error="no npm in the sandbox"),
            record("spw_0eee1", state="unknown", session_id="ses_unsure"),
            {**record("spw_0fff1"), "provider": "modal"},
        ]
    )
    return Registry()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("spw_0aaa1", "spw_0aaa1"),
        ("ses_alpha", "spw_0aaa1"),  # exact, although a prefix of ses_alphabet
        ("ses_alphab", "spw_0aaa2"),
        ("spw_0b", "spw_0bbb1"),
        ("ses_g", "spw_0ccc1"),
    ],
)
def test_resolve_by_id_session_or_unique_prefix(
    known: Registry, reference: str, expected: str
) -> None:
    found = listing.resolve(reference, project_root=None, registry=known)
    assert found["spawn_id"] == expected


def test_resolve_an_ambiguous_prefix_lists_every_match(known: Registry) -> None:
    with pytest.raises(UsageError) as caught:
        listing.resolve("spw_0aaa", project_root=None, registry=known)
    assert caught.value.message == (
        "'spw_0aaa' matches 2 spawns: spw_0aaa1 (ses_alpha), spw_0aaa2 (ses_alphabet)"
    )
    with pytest.raises(UsageError) as caught:
        listing.resolve("spw_0", project_root=None, registry=known)
    assert "spw_0bbb1 (no session)" in caught.value.message


def test_resolve_an_unknown_reference(known: Registry) -> None:
    for reference in ("spw_9", "spw_0fff1"):  # the second is another tool's
        with pytest.raises(UsageError) as caught:
            listing.resolve(reference, project_root=None, registry=known)
        assert caught.value.message == f"no spawn or session matches {reference!r}"
        assert caught.value.exit_code == 2


def test_resolve_filters_by_provider(known: Registry) -> None:
    with pytest.raises(UsageError):
        listing.resolve(
            "spw_0aaa1", project_root=None, provider="local", registry=known
        )
    found = listing.resolve("spw_0aaa1", project_root=None, provider="sprites")
    assert found["spawn_id"] == "spw_0aaa1"


def test_resolve_defaults_to_the_newest_running_spawn_of_the_project() -> None:
    write_spawns(
        [
            record("spw_old", created_at="2026-12-03T09:00:00.000000Z"),
            record("spw_new", created_at="2026-12-03T10:00:00.000000Z"),
            record(
                "spw_starting",
                state="spawning",
                created_at="2026-12-03T11:00:00.000000Z",
            ),
            {
                **record("spw_elsewhere", created_at="2026-12-03T12:00:00.000000Z"),
                "af_remote": {"project": OTHER_PROJECT},
            },
            {**record("spw_mod"), "provider": "modal", "created_at": "2027"},
        ]
    )
    in_project = listing.resolve(None, project_root=Path(PROJECT))
    assert in_project["spawn_id"] == "spw_new"
    anywhere = listing.resolve(None, project_root=None, require_running=True)
    assert anywhere["spawn_id"] == "spw_elsewhere"
    other = listing.resolve(None, project_root=Path(OTHER_PROJECT))
    assert other["spawn_id"] == "spw_elsewhere"


def test_resolve_without_a_running_spawn() -> None:
    write_spawns(
        [
            record("spw_done", state="terminated"),
            record("spw_late", state="failed", created_at="2026-12-04T00:00:00Z"),
        ]
    )
    # Without require_running the newest spawn of the project is still named, so
    # that `status` can say what became of it.
    assert listing.resolve(None, project_root=Path(PROJECT))["spawn_id"] == "spw_late"
    with pytest.raises(UsageError) as caught:
        listing.resolve(None, project_root=Path(PROJECT), require_running=True)
    assert caught.value.message.startswith("no running spawn in this project")
    with pytest.raises(UsageError):
        listing.resolve(None, project_root=Path("/nowhere"))


@pytest.mark.parametrize(
    ("reference", "state"),
    [("spw_0aaa2", "spawning"), ("spw_0bbb1", "requested"), ("spw_0eee1", "unknown")],
)
def test_require_running_on_a_spawn_still_starting_is_not_ready(
    known: Registry, reference: str, state: str
) -> None:
    with pytest.raises(NotReadyError) as caught:
        listing.resolve(
            reference, project_root=None, registry=known, require_running=True
        )
    assert caught.value.message == (
        f"spawn {reference} is not running yet (state {state})"
    )
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("spw_0ccc1", "spawn spw_0ccc1 is terminated"),
        ("spw_0ddd1", "spawn spw_0ddd1 is failed: no npm in the sandbox"),
    ],
)
def test_require_running_on_a_finished_spawn_is_a_usage_error(
    known: Registry, reference: str, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        listing.resolve(
            reference, project_root=None, registry=known, require_running=True
        )
    assert caught.value.message == message
    assert caught.value.exit_code == 2


def test_attach_to_a_spawn_still_starting_exits_3(
    known: Registry, run_cli: RunCli, tmp_path: Path
) -> None:
    result = run_cli("attach", "spw_0aaa2", cwd=tmp_path)
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "af-remote: error: spawn spw_0aaa2 is not running yet (state spawning)"
    )


def test_require_running_by_default_names_a_spawn_still_starting() -> None:
    write_spawns([record("spw_starting", state="spawning")])
    with pytest.raises(NotReadyError):
        listing.resolve(None, project_root=Path(PROJECT), require_running=True)
