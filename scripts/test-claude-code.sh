#!/usr/bin/env bash
# Claude Code against nexus-server: installs the pinned @anthropic-ai/claude-code
# (tests/agents/claude-code, `npm ci` into .cache/agents/claude-code), starts the mock upstream and
# the server on 127.0.0.1, configures providers of kind openai and anthropic on the mock and a
# client key, then runs `claude -p` once per provider with a temporary HOME and checks that the
# turn completes with the mock's answer. Every request Claude Code sends must succeed.
source "$(dirname "$0")/common.sh"

CC_DIR=.cache/agents/claude-code
if [ ! -x "$CC_DIR/node_modules/.bin/claude" ] || ! cmp -s tests/agents/claude-code/package-lock.json "$CC_DIR/package-lock.json"; then
  log "installing Claude Code (npm ci, pinned in tests/agents/claude-code)"
  mkdir -p "$CC_DIR"
  cp tests/agents/claude-code/package.json tests/agents/claude-code/package-lock.json "$CC_DIR/"
  npm ci --prefix "$CC_DIR" --no-audit --no-fund --loglevel=error
fi
CLAUDE="$ROOT/$CC_DIR/node_modules/.bin/claude"

log "building nexus-server and nexus-mock-upstream"
cargo build -p nexus-server -p nexus --features nexus/testing --bins

WORK="$(mktemp -d)"
start_mock_upstream target/debug/nexus-mock-upstream "$WORK/mock.out"
ADMIN=cc-admin-token-0123456789abcdef
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

KEY="$(admin POST /api/keys '{"name":"claude-code"}' | json '["key"]')"
fails=0
for kind in openai anthropic; do
  pid="$(admin POST /api/providers "{\"name\":\"cc-$kind\",\"kind\":\"$kind\",\"base_url\":\"$MOCK_URL\",\"api_key\":\"sk-$kind-upstream-0123456789\"}" | json '["id"]')"
  model="cc-$kind-chunks3"
  admin POST "/api/providers/$pid/models" "{\"name\":\"$model\"}" > /dev/null

  log "claude -p against kind $kind (model $model)"
  HOME_DIR="$WORK/home-$kind"; mkdir -p "$HOME_DIR"
  before="$(admin GET '/api/stats/summary' | json '["requests"]')"
  set +e
  ( cd "$HOME_DIR" && env -i PATH="$PATH" HOME="$HOME_DIR" \
      ANTHROPIC_BASE_URL="$BASE" ANTHROPIC_API_KEY="$KEY" ANTHROPIC_MODEL="$model" \
      ANTHROPIC_SMALL_FAST_MODEL="$model" ANTHROPIC_DEFAULT_HAIKU_MODEL="$model" \
      DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
      DISABLE_ERROR_REPORTING=1 NO_PROXY=127.0.0.1 \
      timeout 120 "$CLAUDE" -p "Say hello" --output-format json < /dev/null ) > "$WORK/out-$kind.json" 2> "$WORK/err-$kind.txt"
  rc=$?
  set -e
  after="$(admin GET '/api/stats/summary' | json '["requests"]')"
  errors="$(admin GET '/api/stats/summary' | json '["errors"]')"
  result="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('result',''))" "$WORK/out-$kind.json" 2>/dev/null || true)"
  echo "exit $rc; requests to the hub: $((after - before)); errors so far: $errors; result: $result"
  if [ "$rc" != 0 ] || [[ "$result" != *"tok0 tok1 tok2"* ]] || [ "$errors" != 0 ] || [ "$((after - before))" -lt 1 ]; then
    echo "FAILED: claude -p against kind $kind" >&2
    cat "$WORK/out-$kind.json" "$WORK/err-$kind.txt" >&2
    fails=$((fails + 1))
  fi
done
grep -E '"route":|route=' "$WORK/server.log" | grep -o 'route=[^ ]* status=[0-9]*' | sort | uniq -c || true
[ "$fails" = 0 ] || exit 1
log "Claude Code completed a turn through the hub for every kind tried"
