"""One of many concurrent af-remote processes writing the registry (for test_records).

Usage: records_writer.py WORKER COUNT GO_FILE

Waits until GO_FILE exists so that all writers start together, then goes through the
record keeping of COUNT spawns the way ``af-remote up`` does, and prints what it
created as JSON. The registry is found through XDG_CONFIG_HOME like in real use.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from af_remote.records import Registry

SHARED_REQUEST_ID = "shared-request"


def wait_for(go_file: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not go_file.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{go_file} never appeared")
        time.sleep(0.005)


def main() -> None:
    worker, count, go_file = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    wait_for(go_file)

    # Generous: the test holds a lock on purpose and the machine may be busy; this
    # process is about correctness, the timeout itself is tested elsewhere.
    registry = Registry(lock_timeout=120)
    shared = registry.create_spawn(
        provider="local", sandbox="shared", request_id=SHARED_REQUEST_ID
    )
    spawn_ids = []
    for index in range(count):
        spawn = registry.create_spawn(
            provider="local",
            sandbox=f"sandbox-{worker}",
            request_id=f"w{worker}-{index}",
            af_remote={"worker": worker, "index": index},
        )
        spawn_id = spawn["spawn_id"]
        registry.update_spawn(spawn_id, state="spawning")
        session_id = f"ses_w{worker}_{index}"
        registry.upsert_session(
            session_id=session_id,
            server_ref=f"http://127.0.0.1:{4096 + worker}",
            directory=f"/work/w{worker}/{index}",
            project=f"project-{worker}",
            work_ref=spawn_id,
        )
        registry.update_spawn(
            spawn_id,
            state="running",
            session_id=session_id,
            af_remote={"server_port": 4096 + worker},
        )
        spawn_ids.append(spawn_id)

    print(json.dumps({"shared": shared["spawn_id"], "spawns": spawn_ids}))


if __name__ == "__main__":
    main()
