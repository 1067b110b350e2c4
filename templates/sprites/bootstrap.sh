#!/usr/bin/env bash
# Prepares this sprite for an af-remote agent and starts it.
#
# `af-remote up` uploads this script with its inputs beside it, all sharing the
# script's name prefix (PREFIX = this path without "bootstrap.sh"), and runs it with
# `sprite exec`:
#   PREFIXspawn.env      settings for this run, written by af-remote (quoted values)
#   PREFIXsecrets.env    forwarded secrets and the OpenCode server password
#   PREFIXopencode.json  OpenCode's configuration
#   PREFIXserver.env     the server's environment from the render's server.env (quoted)
#   PREFIXsession.json   body of the "create session" request
#   PREFIXprompt.json    body of the prompt request (absent: no prompt)
#   PREFIXsource.bundle  git bundle of the project's HEAD (source mode "bundle")
#   PREFIXserve.sh, PREFIXkeepalive.sh   the scripts the sprite services run
#   PREFIXstatus.sh      what `af-remote status` runs
#
# Safe to run again: each step checks before it acts. Progress goes to stdout as
# lines starting with "::af-remote::"; everything else goes to stderr.
# -E: the error trap also fires inside the step functions.
set -Eeuo pipefail

readonly MARK='::af-remote::'
readonly TOTAL_STEPS=10
readonly ROOT="$HOME/.af-remote"
readonly SERVER_SERVICE=opencode
readonly KEEPALIVE_SERVICE=af-keepalive
readonly HEALTH_TIMEOUT_SECONDS=120
current_step=0

step() {
  current_step=$((current_step + 1))
  printf '%s step %d/%d %s\n' "$MARK" "$current_step" "$TOTAL_STEPS" "$*"
}

fail() {
  printf '%s error %s\n' "$MARK" "$*"
  exit 1
}

on_error() {
  local status=$1 line=$2 command=$3
  if ((BASH_SUBSHELL > 0)); then
    exit "$status" # the shell around it reports
  fi
  fail "step $current_step/$TOTAL_STEPS failed (exit $status at bootstrap.sh line $line: $command); its output is above on stderr"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# json_get FIELD: prints FIELD (dotted path) of the JSON document on stdin.
json_get() {
  node -e '
    let text = "";
    process.stdin.on("data", (chunk) => (text += chunk));
    process.stdin.on("end", () => {
      let value = JSON.parse(text);
      for (const key of process.argv[1].split(".")) value = value == null ? value : value[key];
      if (value !== undefined && value !== null) process.stdout.write(String(value));
    });
  ' "$1"
}

urlencode() {
  node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"
}

# api METHOD PATH [curl args...]: calls the OpenCode server with the password from
# curl.conf (never on a command line) and prints the response body.
api() {
  local method=$1 path=$2
  shift 2
  curl --silent --show-error --fail --max-time "${API_MAX_TIME:-30}" \
    --config "$ROOT/curl.conf" --request "$method" "$@" \
    "http://127.0.0.1:$AF_SERVER_PORT$path"
}

collect_inputs() {
  local prefix=${BASH_SOURCE[0]%bootstrap.sh}
  # shellcheck source=/dev/null
  source "${prefix}spawn.env"
  incoming="$ROOT/incoming/$AF_SPAWN_ID"
  workdir="$ROOT/worktrees/$AF_SPAWN_ID"
  step "preparing $ROOT"
  umask 077
  mkdir -p "$ROOT" "$ROOT/bin" "$ROOT/worktrees" "$ROOT/spawns" "$incoming"
  chmod 700 "$ROOT"
  if [[ "$prefix" != "$incoming/" ]]; then
    local file
    for file in "$prefix"*; do
      mv -f -- "$file" "$incoming/${file#"$prefix"}"
    done
  fi
  chmod 600 "$incoming"/*
  clear_stale_uploads "${prefix%/*}"
}

# A run cut off before it got here (a dropped connection, Ctrl-C) leaves its uploads
# in the upload folder as uploaded, secrets.env included; no later run of another
# spawn moves them. Uploads old enough to be nobody's current run are removed.
clear_stale_uploads() {
  find "$1" -maxdepth 1 -type f -name 'af-remote.spw_*' -mmin +10 -delete 2>/dev/null || true
}

install_secrets() {
  step "installing secrets"
  # A running server keeps the secrets it started with: note a change so that
  # the server is restarted below.
  secrets_changed=$(install_file "$incoming/secrets.env" "$ROOT/secrets.env" 600)
  rm -f "$incoming/secrets.env"
  chmod 600 "$ROOT/secrets.env"
  local password
  password=$(
    # shellcheck source=/dev/null
    source "$ROOT/secrets.env"
    printf '%s' "${OPENCODE_SERVER_PASSWORD:-}"
  )
  [[ -n "$password" ]] || fail "secrets.env has no OPENCODE_SERVER_PASSWORD"
  printf 'user = "opencode:%s"\n' "$password" >"$ROOT/curl.conf"
  chmod 600 "$ROOT/curl.conf"
}

install_opencode() {
  local opencode="$ROOT/opencode/bin/opencode"
  # The package's own version file answers in milliseconds; `opencode --version`
  # takes seconds.
  local manifest="$ROOT/opencode"/lib/node_modules/opencode-ai/package.json
  if [[ -x "$opencode" && -f "$manifest" ]] &&
    [[ "$(node -p 'require(process.argv[1]).version' "$manifest")" == "$AF_OPENCODE_VERSION" ]]; then
    step "opencode $AF_OPENCODE_VERSION already installed"
    return
  fi
  step "installing opencode $AF_OPENCODE_VERSION"
  npm install --global --prefix "$ROOT/opencode" --no-fund --no-audit \
    "opencode-ai@$AF_OPENCODE_VERSION" >&2
  [[ "$("$opencode" --version)" == "$AF_OPENCODE_VERSION" ]] ||
    fail "opencode --version does not report $AF_OPENCODE_VERSION after the install"
}

fetch_source() {
  local repo="$ROOT/repo.git"
  # Always: an init cut off by Ctrl-C leaves a folder that is no repository, and
  # init completes it (an existing repository is left as it is).
  git init --quiet --bare "$repo"
  if [[ "$AF_SOURCE" == clone ]]; then
    if ! git -C "$repo" remote get-url origin >/dev/null 2>&1; then
      git -C "$repo" remote add origin -- "$AF_SOURCE_URL"
    fi
    git -C "$repo" fetch --quiet origin '+refs/heads/*:refs/heads/*' >&2
    commit=$(git -C "$repo" rev-parse --verify --quiet "${AF_SOURCE_REF:-HEAD}^{commit}") ||
      fail "$AF_SOURCE_URL has no commit ${AF_SOURCE_REF:-HEAD}"
    return
  fi
  commit=$AF_SOURCE_REF
  if ! git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
    git -C "$repo" fetch --quiet "$incoming/source.bundle" \
      "+HEAD:refs/af-remote/$AF_SPAWN_ID" >&2
  fi
}

place_source() {
  if [[ -e "$workdir/.git" ]]; then
    step "source already placed in $workdir"
    return
  fi
  step "placing the source in $workdir (branch af/$AF_SPAWN_ID)"
  fetch_source
  git -C "$ROOT/repo.git" worktree add --quiet -b "af/$AF_SPAWN_ID" "$workdir" "$commit" >&2
  rm -f "$incoming/source.bundle"
}

# install_file SRC DEST MODE: installs SRC at DEST; prints "changed" when it did.
install_file() {
  if [[ -f "$1" ]] && ! cmp -s "$1" "$2"; then
    install -m "$3" "$1" "$2"
    echo changed
  fi
}

write_config() {
  step "writing the OpenCode configuration"
  config_changed=$(
    printf '%s' "$secrets_changed"
    install_file "$incoming/opencode.json" "$ROOT/opencode.json" 600
    install_file "$incoming/server.env" "$ROOT/server.env" 600
    install_file "$incoming/serve.sh" "$ROOT/bin/serve.sh" 700
  )
  keepalive_changed=$(install_file "$incoming/keepalive.sh" "$ROOT/bin/keepalive.sh" 700)
  install_file "$incoming/status.sh" "$ROOT/bin/status.sh" 700 >/dev/null
}

service_status() {
  sprite-env services get "$1" 2>/dev/null | json_get state.status || true
}

# ensure_service NAME CHANGED ARGS...: creates the service, or restarts it when its
# files CHANGED, or starts it when it is stopped; otherwise leaves it alone.
ensure_service() {
  local name=$1 changed=$2
  shift 2
  local status
  status=$(service_status "$name")
  if [[ -z "$status" ]]; then
    sprite-env services create "$name" "$@" --no-stream >&2
  elif [[ -n "$changed" ]]; then
    sprite-env services restart "$name" >&2
  elif [[ "$status" != running && "$status" != starting ]]; then
    sprite-env services start "$name" >&2
  fi
}

define_services() {
  step "defining the services"
  ensure_service "$SERVER_SERVICE" "$config_changed" \
    --cmd "$ROOT/bin/serve.sh" --args "$AF_SERVER_PORT" --http-port "$AF_SERVER_PORT"
  if [[ "$AF_KEEPALIVE" == on ]]; then
    local args="$AF_SERVER_PORT,$AF_KEEPALIVE_INTERVAL,$AF_KEEPALIVE_EXPIRE" current
    # A service keeps the arguments it was created with, so new settings (poll,
    # expiry, port) need a new one; the old one releases its hold as it stops and
    # the new one takes it again at its first poll.
    current=$(sprite-env services get "$KEEPALIVE_SERVICE" 2>/dev/null | json_get args || true)
    if [[ -n "$current" && "$current" != "$args" ]]; then
      sprite-env services delete "$KEEPALIVE_SERVICE" >&2
    fi
    ensure_service "$KEEPALIVE_SERVICE" "$keepalive_changed" \
      --cmd "$ROOT/bin/keepalive.sh" --args "$args" --needs "$SERVER_SERVICE"
  elif [[ -n "$(service_status "$KEEPALIVE_SERVICE")" ]]; then
    sprite-env services delete "$KEEPALIVE_SERVICE" >&2
    sprite-env curl -X DELETE "/v1/tasks/$KEEPALIVE_SERVICE" >/dev/null 2>&1 || true
  fi
}

wait_for_health() {
  step "waiting for the OpenCode server on port $AF_SERVER_PORT"
  local deadline=$((SECONDS + HEALTH_TIMEOUT_SECONDS))
  # Short attempts: a connection made just as the server starts listening can be
  # accepted and never answered.
  until API_MAX_TIME=2 api GET /global/health >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "/.sprite/logs/services/$SERVER_SERVICE.log" >&2 || true
      fail "the OpenCode server did not answer within ${HEALTH_TIMEOUT_SECONDS}s"
    fi
    sleep 0.2
  done
}

# The spawn's session id and whether its prompt went out are kept under
# spawns/SPAWN-ID, so that running this again never makes a second session or
# sends the prompt twice.
create_session() {
  local state="$ROOT/spawns/$AF_SPAWN_ID" query
  query="directory=$(urlencode "$workdir")"
  mkdir -p "$state"
  if [[ -s "$state/session_id" ]] && api GET "/session/$(<"$state/session_id")?$query" >/dev/null; then
    session_id=$(<"$state/session_id")
    step "session $session_id already exists"
    return
  fi
  step "creating the session"
  session_id=$(
    api POST "/session?$query" \
      --header 'Content-Type: application/json' \
      --data-binary "@$incoming/session.json" | json_get id
  )
  [[ "$session_id" == ses_* ]] || fail "the server returned no session id"
  printf '%s\n' "$session_id" >"$state/session_id"
}

send_prompt() {
  local state="$ROOT/spawns/$AF_SPAWN_ID"
  if [[ ! -f "$incoming/prompt.json" ]]; then
    step "no prompt to send"
    return
  fi
  if [[ -f "$state/prompt_sent" ]]; then
    step "prompt already sent"
    return
  fi
  step "sending the prompt"
  api POST "/session/$session_id/prompt_async?directory=$(urlencode "$workdir")" \
    --header 'Content-Type: application/json' \
    --data-binary "@$incoming/prompt.json" >/dev/null
  touch "$state/prompt_sent"
  rm -f "$incoming/prompt.json"
  hold_awake
}

# The agent starts working now, but the keep-alive sees it only at its next poll
# (and the server may be slow to answer while the agent starts): take the hold
# here so that the sprite cannot pause in between. The keep-alive refreshes or
# releases it from then on.
hold_awake() {
  if [[ "$AF_KEEPALIVE" == on ]]; then
    sprite-env curl --fail -X PUT "/v1/tasks/$KEEPALIVE_SERVICE" \
      -H 'Content-Type: application/json' \
      -d "{\"expire\":\"${AF_KEEPALIVE_EXPIRE}s\"}" >/dev/null ||
      echo "bootstrap: could not take the keep-alive hold; the keep-alive will" >&2
  fi
}

print_result() {
  step "ready"
  node -e '
    const [session_id, port, workdir, version] = process.argv.slice(1);
    const result = { session_id, server_port: Number(port), workdir, opencode_version: version };
    process.stdout.write(process.argv[5] + " result " + JSON.stringify(result) + "\n");
  ' "$session_id" "$AF_SERVER_PORT" "$workdir" "$AF_OPENCODE_VERSION" "$MARK"
}

main() {
  collect_inputs
  install_secrets
  install_opencode
  place_source
  write_config
  define_services
  wait_for_health
  create_session
  send_prompt
  print_result
}

main "$@"
