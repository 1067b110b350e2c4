"""The local provider: the sandbox is a directory on this machine.

``bootstrap.sh`` runs there with bash and starts OpenCode as a background process
(``serve.sh``, pid file under ``run/``); ``attach`` connects to it directly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from af_remote import native, paths
from af_remote.native import Result


@dataclass(frozen=True)
class LocalSandbox:
    name: str

    @property
    def directory(self) -> Path:
        return paths.local_sandboxes_dir() / self.name

    def incoming(self, spawn_id: str) -> Path:
        return self.directory / "incoming" / spawn_id

    def exists(self) -> bool:
        return self.directory.is_dir()

    def ensure(self) -> bool:
        """Create the sandbox directory (0700); True when it was new."""
        new = not self.directory.is_dir()
        paths.ensure_private_dir(self.directory)
        return new

    def place(self, spawn_id: str, files: Mapping[str, Path]) -> Path:
        """Copy a run's inputs into ``incoming/SPAWN-ID`` (0600 each)."""
        incoming = self.incoming(spawn_id)
        paths.ensure_private_dir(incoming.parent)
        paths.ensure_private_dir(incoming)
        for name, source in files.items():
            destination = incoming / name
            shutil.copyfile(source, destination)
            destination.chmod(0o600)
        return incoming

    def bootstrap_argv(self, spawn_id: str) -> list[str]:
        return ["bash", str(self.incoming(spawn_id) / "bootstrap.sh")]

    def serve_argv(self, action: str) -> list[str]:
        script = self.directory / "bin" / "serve.sh"
        return ["bash", str(script), action, str(self.directory)]

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None]) -> Result:
        return native.stream(argv, on_line)

    def stored_password(self) -> str | None:
        """The password the sandbox's server uses, from its 0600 curl.conf."""
        prefix = 'user = "opencode:'
        try:
            lines = (self.directory / "curl.conf").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith(prefix) and line.endswith('"'):
                return line[len(prefix) : -1] or None
        return None

    def server_port(self) -> int | None:
        try:
            return int((self.directory / "run" / "port").read_text().strip())
        except (OSError, ValueError):
            return None

    def server_running(self) -> bool:
        if not (self.directory / "bin" / "serve.sh").is_file():
            return False
        result = native.run(self.serve_argv("status"), check=False)
        return result.returncode == 0

    def destroy(self) -> bool:
        """Stop the server and delete the directory; False when it was already gone."""
        if not self.directory.exists():
            return False
        if (self.directory / "bin" / "serve.sh").is_file():
            native.run(self.serve_argv("stop"), check=False)
        shutil.rmtree(self.directory)
        return True
