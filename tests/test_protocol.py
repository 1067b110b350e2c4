"""The bootstrap protocol: only marked lines count, whatever else shares stdout."""

from __future__ import annotations

import json

import pytest

from af_remote.protocol import MARK, BootstrapReport

RESULT = {
    "session_id": "ses_3fA9",
    "server_port": 8080,
    "workdir": "/home/sprite/.af-remote/work/spw_1",
    "opencode_version": "1.18.33",
}


def fed(*lines: str) -> BootstrapReport:
    report = BootstrapReport()
    for line in lines:
        report.feed(line)
    return report


def test_steps_are_collected_in_order_and_shown_as_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = fed(
        f"{MARK} step 1/3 preparing ~/.af-remote",
        "Connecting to af-my-project...",
        f"{MARK} step 2/3 installing opencode 1.18.33",
    )
    assert report.steps == [
        "1/3 preparing ~/.af-remote",
        "2/3 installing opencode 1.18.33",
    ]
    assert report.last_step == "2/3 installing opencode 1.18.33"
    assert report.result is None
    assert report.error is None
    assert capsys.readouterr().err.splitlines() == [
        "  1/3 preparing ~/.af-remote",
        "  2/3 installing opencode 1.18.33",
    ]


def test_result_line_is_parsed() -> None:
    report = fed(
        f"{MARK} step 9/9 sending the prompt",
        f"{MARK} result {json.dumps(RESULT)}",
    )
    assert report.result == RESULT
    assert report.error is None


@pytest.mark.parametrize(
    "noise",
    [
        "Connecting to af-my-project...",
        f"Running: bash /tmp/x.sh  # would print {MARK} result {{}}",
        f" {MARK} step 1/1 indented",
        f"{MARK}step 1/1 no space after the marker",
        "::af-remote: step 1/1 a different marker",
        f"{MARK.upper()} error shouting",
        f"echo '{MARK} error quoted'",
        f"{MARK} progress 50% (an unknown kind)",
        "",
    ],
)
def test_unmarked_and_unknown_lines_change_nothing(noise: str) -> None:
    report = fed(noise)
    assert report == BootstrapReport()


def test_a_marked_line_inside_noise_is_not_taken_for_a_result() -> None:
    report = fed(f"Running: printf '{MARK} result {json.dumps(RESULT)}'")
    assert report.result is None


@pytest.mark.parametrize(
    "payload",
    ['{"session_id": "ses_1"', "session_id=ses_1", "", "{'session_id': 'ses_1'}"],
)
def test_a_malformed_result_is_an_error(payload: str) -> None:
    report = fed(f"{MARK} result {payload}")
    assert report.result is None
    assert report.error == f"unreadable result line: {payload[:200]!r}"


def test_a_malformed_result_quotes_at_most_200_characters() -> None:
    payload = "{" + "x" * 1000
    report = fed(f"{MARK} result {payload}")
    assert report.error == f"unreadable result line: {payload[:200]!r}"


def test_error_line_is_kept_with_the_step_it_ended() -> None:
    report = fed(
        f"{MARK} step 7/10 waiting for the server",
        f"{MARK} error the OpenCode server did not answer within 120s",
    )
    assert report.error == "the OpenCode server did not answer within 120s"
    assert report.last_step == "7/10 waiting for the server"
    assert report.result is None


def test_status_line_is_read_as_a_result() -> None:
    report = fed(f'{MARK} status {{"server": "running", "busy": false}}')
    assert report.result == {"server": "running", "busy": False}
    assert fed(f"{MARK} status not json").result is None


def test_last_step_of_nothing_is_none() -> None:
    assert BootstrapReport().last_step is None
