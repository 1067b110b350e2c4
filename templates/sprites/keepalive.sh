#!/usr/bin/env bash
# Keeps the sprite awake while an agent works, and only then; run by the sprite
# service "af-keepalive" that bootstrap.sh defines.
# Usage: keepalive.sh PORT [INTERVAL_SECONDS] [EXPIRE_SECONDS]
#
# A sprite pauses ~30 s after its last activity, and an agent waiting on its model
# is no activity. While any OpenCode session is busy, this holds a Tasks API task
# (named like the service) with a short expiry and refreshes it well before it
# expires; once every session is idle it deletes the task so the sprite may pause.
# If the server does not answer (not up yet, restarting), an existing hold is left
# to expire on its own rather than refreshed or dropped.
set -euo pipefail

readonly ROOT="$HOME/.af-remote"
readonly TASK=af-keepalive
port=${1:?usage: keepalive.sh PORT}
interval=${2:-10}
expire=${3:-60}
# "unknown" after a (re)start: a task left from before is released once idle.
holding=unknown

log() { printf '%s keepalive: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

server() {
  curl --silent --fail --max-time 5 --config "$ROOT/curl.conf" "http://127.0.0.1:$port$1"
}

# sessions_busy: succeeds when a session in any agent's worktree is busy; exit 2
# when the server does not answer. Worktree paths (~/.af-remote/worktrees/spw_...)
# need no URL encoding.
sessions_busy() {
  local worktree status
  server /global/health >/dev/null || return 2
  for worktree in "$ROOT"/worktrees/*/; do
    [[ -d "$worktree" ]] || continue
    status=$(server "/session/status?directory=${worktree%/}") || return 2
    if [[ "$status" == *'"busy"'* || "$status" == *'"retry"'* ]]; then
      return 0
    fi
  done
  return 1
}

hold() {
  if sprite-env curl -X PUT "/v1/tasks/$TASK" \
    -H 'Content-Type: application/json' -d "{\"expire\":\"${expire}s\"}" >/dev/null; then
    [[ "$holding" == yes ]] || log "holding the sprite awake (task $TASK, ${expire}s, refreshed every ${interval}s)"
    holding=yes
  else
    log "could not refresh task $TASK"
  fi
}

release() {
  sprite-env curl -X DELETE "/v1/tasks/$TASK" >/dev/null 2>&1 || true
  log "all sessions idle: released task $TASK"
  holding=no
}

release_on_exit() {
  if [[ "$holding" != no ]]; then
    release
  fi
  exit 0
}
trap release_on_exit TERM INT

log "watching sessions on port $port every ${interval}s"
while true; do
  state=0
  sessions_busy || state=$?
  if ((state == 0)); then
    hold
  elif ((state == 1)) && [[ "$holding" != no ]]; then
    release
  fi
  # `wait` on a background sleep lets the TERM trap run at once.
  sleep "$interval" &
  wait $! || true
done
