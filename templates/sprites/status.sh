#!/usr/bin/env bash
# Reports how the sprite's agents are doing, for `af-remote status` (installed
# under ~/.af-remote/bin by bootstrap.sh). Prints one line:
#   ::af-remote:: status {"services": ..., "tasks": ..., "health": ..., "sessions": ...}
# Each part is the raw JSON answer of its source, or null when it did not answer.
# Usage: status.sh PORT
set -uo pipefail

readonly ROOT="$HOME/.af-remote"
port=${1:?usage: status.sh PORT}

server() {
  curl --silent --fail --max-time 10 --config "$ROOT/curl.conf" "http://127.0.0.1:$port$1"
}

services=$(sprite-env services list 2>/dev/null) || services=null
tasks=$(sprite-env curl /v1/tasks 2>/dev/null) || tasks=null
health=$(server /global/health) || health=null
# Session states per agent worktree: {"<worktree>": {"ses_...": {"type": "busy"}}}.
entries=()
for worktree in "$ROOT"/worktrees/*/; do
  [[ -d "$worktree" ]] || continue
  answer=$(server "/session/status?directory=${worktree%/}") || answer=null
  entries+=("\"${worktree%/}\":$answer")
done
sessions="{$(IFS=,; printf '%s' "${entries[*]}")}"

node -e '
  const parse = (text) => { try { return JSON.parse(text); } catch { return null; } };
  const [services, tasks, health, sessions] = process.argv.slice(1).map(parse);
  const report = { services, tasks, health, sessions };
  process.stdout.write("::af-remote:: status " + JSON.stringify(report) + "\n");
' "$services" "$tasks" "$health" "$sessions"
