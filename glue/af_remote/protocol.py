"""The bootstrap protocol: the marked lines ``bootstrap.sh`` prints on stdout.

    ::af-remote:: step 3/10 installing opencode 1.18.33
    ::af-remote:: result {"session_id": "ses_...", "server_port": 8080, ...}
    ::af-remote:: error the OpenCode server did not answer within 120s

Only lines that start with the marker count: the provider's CLI may print its own
lines on the same stdout (``Connecting to ...``), and those are never parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from af_remote import ui

MARK = "::af-remote::"


@dataclass
class BootstrapReport:
    steps: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def last_step(self) -> str | None:
        return self.steps[-1] if self.steps else None

    def feed(self, line: str) -> None:
        """Take one line of the bootstrap's stdout."""
        if not line.startswith(MARK + " "):
            return
        kind, _, rest = line[len(MARK) + 1 :].partition(" ")
        if kind == "step":
            self.steps.append(rest)
            ui.progress(rest)
        elif kind == "result":
            try:
                parsed = json.loads(rest)
            except json.JSONDecodeError:
                self.error = f"unreadable result line: {rest[:200]!r}"
                return
            if isinstance(parsed, dict):
                self.result = parsed
        elif kind == "error":
            self.error = rest
        elif kind == "status":
            try:
                parsed = json.loads(rest)
            except json.JSONDecodeError:
                return
            if isinstance(parsed, dict):
                self.result = parsed
