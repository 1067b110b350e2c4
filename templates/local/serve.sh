#!/usr/bin/env bash
# Starts, stops and reports the sandbox's OpenCode server, a background process
# with a pid file; bootstrap.sh and `af-remote down` call it, and so can you.
# Usage: serve.sh start|stop|status SANDBOX_DIR [PORT]
#
# Files under SANDBOX_DIR/run: opencode.pid, port, opencode.log.
# The secrets (forwarded API keys and OPENCODE_SERVER_PASSWORD) are read from
# SANDBOX_DIR/secrets.env here and nowhere else; no password, no server.
set -euo pipefail

usage() {
  echo "usage: serve.sh start|stop|status SANDBOX_DIR [PORT]" >&2
  exit 2
}

command=${1:-}
root=${2:-}
[[ -n "$command" && -n "$root" ]] || usage
run="$root/run"
pid_file="$run/opencode.pid"

# server_pid: prints the pid of a live server started from this sandbox.
server_pid() {
  local pid
  [[ -f "$pid_file" ]] || return 1
  pid=$(<"$pid_file")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(ps -p "$pid" -o command= 2>/dev/null)" == *opencode* ]] || return 1
  printf '%s\n' "$pid"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  node -e '
    const server = require("net").createServer();
    server.listen(0, "127.0.0.1", () => {
      process.stdout.write(String(server.address().port));
      server.close();
    });
  '
}

start() {
  local port=${1:-0} opencode=${AF_OPENCODE_BIN:-$root/opencode/bin/opencode}
  if server_pid >/dev/null; then
    echo "serve.sh: already running (pid $(server_pid), port $(<"$run/port"))" >&2
    return
  fi
  rm -f "$pid_file"
  if [[ "$port" == 0 ]]; then
    port=$(free_port)
  elif port_in_use "$port"; then
    echo "serve.sh: port $port is in use by another program; set AF_REMOTE_SERVER_PORT to a free port or 0" >&2
    exit 1
  fi
  (
    set -a
    if [[ -f "$root/server.env" ]]; then
      # shellcheck source=/dev/null
      source "$root/server.env"
    fi
    # shellcheck source=/dev/null
    source "$root/secrets.env"
    set +a
    if [[ -z "${OPENCODE_SERVER_PASSWORD:-}" ]]; then
      echo "serve.sh: OPENCODE_SERVER_PASSWORD is not set in $root/secrets.env; refusing to serve without it" >&2
      exit 1
    fi
    export OPENCODE_CONFIG="$root/opencode.json"
    cd "$root/worktrees"
    # setsid: the server outlives the shell that started it and gets its own
    # process group, so `stop` can end it with everything it spawned.
    setsid "$opencode" serve --port "$port" --hostname 127.0.0.1 \
      </dev/null >>"$run/opencode.log" 2>&1 &
    printf '%s\n' "$!" >"$pid_file"
  )
  printf '%s\n' "$port" >"$run/port"
  echo "serve.sh: started (pid $(<"$pid_file"), port $port, log $run/opencode.log)" >&2
}

stop() {
  local pid
  if ! pid=$(server_pid); then
    rm -f "$pid_file"
    echo "serve.sh: not running" >&2
    return
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && ((waited < 50)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
  echo "serve.sh: stopped (pid $pid)" >&2
}

status() {
  local pid
  if pid=$(server_pid); then
    echo "running pid=$pid port=$(<"$run/port")"
  else
    echo "stopped"
    return 3
  fi
}

mkdir -p "$run"
case "$command" in
  start) start "${3:-0}" ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
