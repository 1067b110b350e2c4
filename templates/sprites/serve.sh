#!/usr/bin/env bash
# Runs the OpenCode server; started by the sprite service "opencode" that
# bootstrap.sh defines (`sprite-env services get opencode` shows it).
# Usage: serve.sh PORT
#
# The secrets (forwarded API keys and OPENCODE_SERVER_PASSWORD) are read from
# ~/.af-remote/secrets.env here and nowhere else. The server refuses to start
# without a password.
set -euo pipefail

readonly ROOT="$HOME/.af-remote"
port=${1:?usage: serve.sh PORT}

set -a
if [[ -f "$ROOT/server.env" ]]; then
  # shellcheck source=/dev/null
  source "$ROOT/server.env"
fi
# shellcheck source=/dev/null
source "$ROOT/secrets.env"
set +a
if [[ -z "${OPENCODE_SERVER_PASSWORD:-}" ]]; then
  echo "serve.sh: OPENCODE_SERVER_PASSWORD is not set in $ROOT/secrets.env; refusing to serve without it" >&2
  exit 1
fi

export OPENCODE_CONFIG="$ROOT/opencode.json"
cd "$ROOT/worktrees"
exec "$ROOT/opencode/bin/opencode" serve --port "$port" --hostname 0.0.0.0
