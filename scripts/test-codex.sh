#!/usr/bin/env bash
# OpenAI's Codex CLI against nexus-server: installs the pinned @openai/codex (tests/agents/codex,
# `npm ci` into .cache/agents/codex; its native binary comes in the optional dependency
# @openai/codex-linux-x64), starts the mock upstream and the server on 127.0.0.1, configures
# providers of kind openai, anthropic, gemini and azure on the mock and a client key, then runs
# `codex exec` once per provider with a temporary HOME and CODEX_HOME whose config.toml makes the
# hub a custom provider speaking the Responses API (`POST {base_url}/responses`), and checks that
# the turn completes with the mock's answer. Every request Codex sends must succeed, and Codex must
# reach nothing but the hub (analytics and the plugin marketplace sync are turned off).
source "$(dirname "$0")/common.sh"

CX_DIR=.cache/agents/codex
if [ ! -x "$CX_DIR/node_modules/.bin/codex" ] || ! cmp -s tests/agents/codex/package-lock.json "$CX_DIR/package-lock.json"; then
  log "installing Codex (npm ci, pinned in tests/agents/codex)"
  mkdir -p "$CX_DIR"
  cp tests/agents/codex/package.json tests/agents/codex/package-lock.json "$CX_DIR/"
  npm ci --prefix "$CX_DIR" --no-audit --no-fund --loglevel=error
fi
CODEX="$ROOT/$CX_DIR/node_modules/.bin/codex"

log "building nexus-server and nexus-mock-upstream"
cargo build -p nexus-server -p nexus --features nexus/testing --bins

WORK="$(mktemp -d)"
start_mock_upstream target/debug/nexus-mock-upstream "$WORK/mock.out"
ADMIN=cx-admin-token-0123456789abcdef
NEXUS_ADMIN_TOKEN=$ADMIN NEXUS_LOG=info target/debug/nexus-server --listen 127.0.0.1:0 --db "$WORK/nexus.db" \
  > /dev/null 2> "$WORK/server.log" &
SERVER_PID=$!
trap 'kill $MOCK_PID $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
BASE=""
for _ in $(seq 100); do
  BASE="$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -n1 | sed 's/listening on //' || true)"
  [ -n "$BASE" ] && break
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$WORK/server.log" >&2; echo "nexus-server did not start" >&2; exit 1; }

admin() { curl -sf -X "$1" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$BASE$2" ${3:+-d "$3"}; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# The native binary is there and runs (npm skips an optional dependency it cannot install).
mkdir -p "$WORK/codex-version"
env -i PATH="$PATH" HOME="$WORK" CODEX_HOME="$WORK/codex-version" "$CODEX" --version

KEY="$(admin POST /api/keys '{"name":"codex"}' | json '["key"]')"
fails=0
for kind in openai anthropic gemini azure; do
  # azure: the model's upstream name is the deployment (default api_version); the mock reads its
  # behaviour words from the deployment name, the others from the model name.
  pid="$(admin POST /api/providers "{\"name\":\"cx-$kind\",\"kind\":\"$kind\",\"base_url\":\"$MOCK_URL\",\"api_key\":\"sk-$kind-upstream-0123456789\"}" | json '["id"]')"
  model="cx-$kind-chunks3"
  admin POST "/api/providers/$pid/models" "{\"name\":\"$model\"}" > /dev/null

  log "codex exec against kind $kind (model $model)"
  HOME_DIR="$WORK/home-$kind"; CODEX_HOME_DIR="$HOME_DIR/.codex"; mkdir -p "$CODEX_HOME_DIR" "$HOME_DIR/work"
  # Root keys before tables. Without [analytics] and features.plugins Codex also calls
  # ab.chatgpt.com, chatgpt.com, github.com and api.github.com. No retries: a failure shows at once
  # (Codex otherwise retries a request 4 times and a broken stream 5 times).
  cat > "$CODEX_HOME_DIR/config.toml" <<EOF
model = "$model"
model_provider = "nexus"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false

[model_providers.nexus]
name = "Nexus"
base_url = "$BASE/v1"
env_key = "NEXUS_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
EOF
  before="$(admin GET '/api/stats/summary' | json '["requests"]')"
  set +e
  ( cd "$HOME_DIR/work" && env -i PATH="$PATH" HOME="$HOME_DIR" CODEX_HOME="$CODEX_HOME_DIR" \
      NEXUS_KEY="$KEY" NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
      timeout 120 "$CODEX" exec --skip-git-repo-check --strict-config --sandbox read-only --color never \
        --output-last-message "$WORK/last-$kind.txt" "Say hello" < /dev/null ) > "$WORK/out-$kind.txt" 2> "$WORK/err-$kind.txt"
  rc=$?
  set -e
  after="$(admin GET '/api/stats/summary' | json '["requests"]')"
  errors="$(admin GET '/api/stats/summary' | json '["errors"]')"
  result="$(cat "$WORK/last-$kind.txt" 2>/dev/null || true)"
  echo "exit $rc; requests to the hub: $((after - before)); errors so far: $errors; result: $result"
  if [ "$rc" != 0 ] || [[ "$result" != *"tok0 tok1 tok2"* ]] || [ "$errors" != 0 ] || [ "$((after - before))" -lt 1 ]; then
    echo "FAILED: codex exec against kind $kind" >&2
    cat "$WORK/out-$kind.txt" "$WORK/err-$kind.txt" >&2
    fails=$((fails + 1))
  fi
done
grep -E '"route":|route=' "$WORK/server.log" | grep -o 'route=[^ ]* status=[0-9]*' | sort | uniq -c || true
[ "$fails" = 0 ] || exit 1
log "Codex completed a turn through the hub for every kind tried"
