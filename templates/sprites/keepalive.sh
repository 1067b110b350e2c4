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
# While holding, refresh at least three times per expiry so that one slow or missed
# poll does not let the task lapse, whatever the poll interval.
refresh=$interval
if ((expire / 3 < refresh)); then
  refresh=$((expire / 3 > 1 ? expire / 3 : 1))
fi
# "unknown" after a (re)start: a task left from before is released once idle.
holding=unknown

log() { printf '%s keepalive: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# Short attempts: the server answers in milliseconds, and a connection made just as
# it starts listening can be accepted and never answered; waiting that out would
# leave a busy agent unheld past the sprite's idle window.
server() {
  curl --silent --fail --max-time 2 --config "$ROOT/curl.conf" "http://127.0.0.1:$port$1"
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
  # --fail: a refused PUT (4xx) is no hold.
  if sprite-env curl --silent --show-error --fail -X PUT "/v1/tasks/$TASK" \
    -H 'Content-Type: application/json' -d "{\"expire\":\"${expire}s\"}" >/dev/null; then
    [[ "$holding" == yes ]] || log "holding the sprite awake (task $TASK, ${expire}s, refreshed every ${refresh}s)"
    holding=yes
  else
    log "could not refresh task $TASK"
  fi
}

# release: deletes the task. After a (re)start there is usually none (404), which
# is not worth a log line; a failed delete is tried again at the next poll.
release() {
  local code
  code=$(sprite-env curl --silent --output /dev/null --write-out '%{http_code}' \
    -X DELETE "/v1/tasks/$TASK") || code=000
  case "$code" in
    204) log "all sessions idle: released task $TASK" ;;
    404) [[ "$holding" != yes ]] || log "all sessions idle: task $TASK had already expired" ;;
    *)
      log "could not delete task $TASK (HTTP $code); it expires within ${expire}s"
      return
      ;;
  esac
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
  period=$interval
  [[ "$holding" != yes ]] || period=$refresh
  # `wait` on a background sleep lets the TERM trap run at once.
  sleep "$period" &
  wait $! || true
done
