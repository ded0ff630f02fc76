#!/usr/bin/env bash
# NexusAI Hub benchmarks (issue #8): gateway vs the mock upstream called directly, in the same run.
#
#   scripts/bench.sh            the full suite (about 15 minutes on 2 cores; builds first)
#   scripts/bench.sh --smoke    tiny counts (about 30 s after the build): checks the tools still work
#   BENCH_ONLY=hostile,http,kinds,ingress,money,client,memory,soak,stats,tokens,python,proxy scripts/bench.sh    a subset
#
# Everything listens on 127.0.0.1 only, every load is bounded in count and time, and every process
# this script starts is killed when it exits, on failure too. Results: target/bench/<stamp>/
# (results.jsonl, summary.md, logs); summary.md is printed at the end. Figures are noisy on a shared
# machine: compare gateway with direct from the same run, never with another run.
source "$(dirname "$0")/common.sh"

SMOKE=0
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
ONLY="${BENCH_ONLY:-hostile,http,proxy,kinds,ingress,money,client,memory,soak,stats,tokens,python}"
want() { [[ ",$ONLY," == *",$1,"* ]]; }

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$ROOT/target/bench/$STAMP"
[ "$SMOKE" = 1 ] && OUT="$ROOT/target/bench/smoke-$STAMP"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  [ $rc = 0 ] || echo "bench: failed (exit $rc); logs in $OUT" >&2
  exit $rc
}
trap cleanup EXIT INT TERM

# Open files: 10,000 streams need ~10,000 sockets in each of the three processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
log "open-file limit: $(ulimit -n)"

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building release binaries"
  # Separate invocations so that nexus-server is built without the mock's `testing` feature.
  cargo build --release --locked -p nexus-server -p nexus-bench
  cargo build --release --locked -p nexus --features testing --bin nexus-mock-upstream
fi
BIN="$ROOT/target/release"

rss() { # rss PID -> "VmRSS_kB VmHWM_kB"
  awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} END{print r+0, h+0}' "/proc/$1/status" 2>/dev/null || echo "0 0"
}
note() { # note JSON: appends a result line
  echo "$1" >> "$RESULTS"
}

# ---- processes -------------------------------------------------------------------------------
start_mock() {
  MOCK_THREADS="${MOCK_THREADS:-1}" "$BIN/nexus-mock-upstream" > "$OUT/mock.out" 2> "$OUT/mock.err" &
  MOCK_PID=$!; PIDS+=("$MOCK_PID")
  for _ in $(seq 100); do
    MOCK_URL="$(head -n1 "$OUT/mock.out" 2>/dev/null || true)"
    [ -n "$MOCK_URL" ] && break
    sleep 0.1
  done
  [ -n "$MOCK_URL" ] || { echo "mock upstream did not start" >&2; exit 1; }
}

start_server() {
  ADMIN_TOKEN="bench-admin-$RANDOM$RANDOM$RANDOM"
  rm -f "$OUT"/nexus.db*
  # 10,000 open streams need more than the default connection and in-flight caps; the body
  # limit sits above 16 MiB so the hostile-body rows measure the parse, not the limit.
  printf 'body_limit_bytes = %d\n' $((17 * 1024 * 1024)) > "$OUT/server.toml"
  NEXUS_ADMIN_TOKEN="$ADMIN_TOKEN" NEXUS_MAX_CONNECTIONS=25000 NEXUS_MAX_INFLIGHT_REQUESTS=25000 \
    "$BIN/nexus-server" --listen 127.0.0.1:0 --db "$OUT/nexus.db" --config "$OUT/server.toml" \
    > "$OUT/server.out" 2> "$OUT/server.err" &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  SERVER_URL=""
  for _ in $(seq 100); do
    SERVER_URL="$(grep -o 'listening on http://[0-9.:]*' "$OUT/server.err" 2>/dev/null | head -n1 | sed 's/listening on //' || true)"
    [ -n "$SERVER_URL" ] && break
    sleep 0.1
  done
  [ -n "$SERVER_URL" ] || { echo "nexus-server did not start; see $OUT/server.err" >&2; exit 1; }
  # Configure through the admin API: one provider (the mock), the models used below, one key.
  local pid
  pid="$(admin POST /api/providers "{\"name\":\"mock\",\"base_url\":\"$MOCK_URL\",\"api_key\":\"sk-bench\"}" | json id)"
  for m in chunks20 chunks20-delay20 chunks30-delay1000 chunks3-delay500; do
    admin POST "/api/providers/$pid/models" "{\"name\":\"$m\"}" > /dev/null
  done
  # The translating kinds, on the same mock (it serves every kind's wire format): the client
  # speaks OpenAI to `<kind>-chunks20`, the hub sends the kind's format upstream as `chunks20`.
  for kind in anthropic gemini; do
    pid="$(admin POST /api/providers "{\"name\":\"mock-$kind\",\"kind\":\"$kind\",\"base_url\":\"$MOCK_URL\",\"api_key\":\"sk-bench\"}" | json id)"
    admin POST "/api/providers/$pid/models" "{\"name\":\"$kind-chunks20\",\"upstream_name\":\"chunks20\"}" > /dev/null
  done
  # Money: the same answer on a priced model (costed by the ledger) for a key with a budget
  # (reserved and settled by admission), beside the plain key on the unpriced model.
  pid="$(admin POST /api/providers "{\"name\":\"mock-priced\",\"base_url\":\"$MOCK_URL\",\"api_key\":\"sk-bench\"}" | json id)"
  admin POST "/api/providers/$pid/models" '{"name":"priced-chunks20","upstream_name":"chunks20","input_price":2.5,"output_price":10,"cached_input_price":1.25}' > /dev/null
  CLIENT_KEY="$(admin POST /api/keys '{"name":"bench"}' | json key)"
  BUDGET_KEY="$(admin POST /api/keys '{"name":"bench-budget","budget_usd":1000000,"budget_period":"monthly","soft_budget_usd":999999}' | json key)"
}

admin() { # admin METHOD PATH [BODY]
  curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "$SERVER_URL$2"
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# ---- load ------------------------------------------------------------------------------------
# load NAME TARGET(direct|gateway) ARGS... : runs the load generator, samples the server's RSS
# while it runs, and appends {"bench":NAME,"via":TARGET,...,"server_rss_kb":{...}} to results.
load() {
  local name="$1" via="$2"; shift 2
  local url="$SERVER_URL" key=(--key "$CLIENT_KEY")
  if [ "$via" = direct ]; then url="$MOCK_URL"; key=(); fi
  if [ "$via" = gateway ] && [ "${KEEP_FORMAT:-0}" != 1 ]; then
    # The gateway speaks OpenAI to its client here; --format is the direct row's.
    local args=() skip=0
    for a in "$@"; do
      if [ "$skip" = 1 ]; then skip=0; continue; fi
      if [ "$a" = --format ]; then skip=1; continue; fi
      args+=("$a")
    done
    set -- "${args[@]}"
  fi
  local res="$OUT/load-$name-$via.json"
  "$BIN/nexus-bench" load --url "$url" "${key[@]}" --label "$name" "$@" > "$res" 2> "$OUT/load-$name-$via.err" &
  local lp=$!; PIDS+=("$lp")
  local max=0 r h
  while kill -0 "$lp" 2>/dev/null; do
    read -r r h < <(rss "$SERVER_PID")
    [ "$r" -gt "$max" ] && max=$r
    sleep 0.25
  done
  wait "$lp"
  read -r r h < <(rss "$SERVER_PID")
  python3 - "$res" "$name" "$via" "$max" "$r" "$h" >> "$RESULTS" <<'PY'
import json, sys
res, name, via, mx, r, h = sys.argv[1:]
d = json.load(open(res))
d.update(bench=name, via=via, server_rss_kb={"max_during": int(mx), "after": int(r), "hwm": int(h)})
print(json.dumps(d))
PY
  python3 - "$res" "$via" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); l = d["latency_ms"] or {}; t = d["ttfb_ms"] or {}
ev = d.get("events") or {}
print(f"  {sys.argv[2]:8} c={d['concurrency']:<5} {d['rps']:9.0f} req/s  p50 {l.get('p50',0):8.3f} ms  p99 {l.get('p99',0):8.3f} ms"
      f"  ttfb p50 {t.get('p50',0):8.3f} ms  events {ev.get('min','-')}..{ev.get('max','-')}  errors {d['errors']}"
      + (f"  ({d['first_error']})" if d['first_error'] else ""))
PY
}

if [ "$SMOKE" = 1 ]; then
  DUR=1; WARM=0.3; PACED_DUR=1.5; OPEN_N=200; OPEN_MODEL=chunks3-delay500; OPEN_RAMP=0.5; SOAK_N=5000
  STATS_ROWS=20000; WRITER_N=5000; TOKEN_ARGS=(--smoke); CLIENT_N=500
else
  DUR="${BENCH_DURATION:-10}"; WARM=1; PACED_DUR=15; OPEN_N="${BENCH_OPEN_STREAMS:-10000}"
  OPEN_MODEL=chunks30-delay1000; OPEN_RAMP=5; SOAK_N="${BENCH_SOAK_REQUESTS:-1000000}"
  STATS_ROWS="${BENCH_STATS_ROWS:-10000000}"; WRITER_N=200000; TOKEN_ARGS=(); CLIENT_N=20000
fi

if want http || want proxy || want kinds || want ingress || want money || want memory || want soak || want hostile; then
  log "starting the mock upstream and nexus-server"
  start_mock
  start_server
  echo "  mock $MOCK_URL (pid $MOCK_PID), server $SERVER_URL (pid $SERVER_PID)"
  sleep 1
  read -r r h < <(rss "$SERVER_PID")
  note "{\"bench\":\"idle\",\"server_rss_kb\":{\"after\":$r,\"hwm\":$h}}"
  echo "  server RSS at idle: $((r / 1024)) MB"
fi

if want hostile; then
  log "hostile bodies: the server's peak RSS for one 16 MiB body of tiny messages and one of 100,000 messages"
  # Run on the fresh server, before any load, so VmHWM (the process's peak) is this request's.
  for shape in tiny16mib msgs100k; do
    python3 - "$shape" > "$OUT/hostile-$shape.json" <<'PY'
import json, sys
if sys.argv[1] == "tiny16mib":
    one = '{"role":"user","content":""},'
    n = (16 * 1024 * 1024 - 1024) // len(one)
else:
    one = '{"role":"user","content":"hi"},'
    n = 100_000
sys.stdout.write('{"model":"chunks3","messages":[' + one * (n - 1) + one[:-1] + ']}')
PY
    read -r _ h0 < <(rss "$SERVER_PID")
    code="$(curl -s -o "$OUT/hostile-$shape.out" -w '%{http_code}' -H "Authorization: Bearer $CLIENT_KEY" \
      -H 'content-type: application/json' --data-binary "@$OUT/hostile-$shape.json" "$SERVER_URL/v1/chat/completions")"
    read -r r1 h1 < <(rss "$SERVER_PID")
    bytes="$(stat -c %s "$OUT/hostile-$shape.json")"
    note "{\"bench\":\"hostile-$shape\",\"status\":$code,\"body_bytes\":$bytes,\"server_rss_kb\":{\"hwm_before\":$h0,\"hwm_after\":$h1,\"after\":$r1}}"
    echo "  $shape: $bytes bytes -> HTTP $code; server peak RSS $((h0 / 1024)) -> $((h1 / 1024)) MB"
    rm -f "$OUT/hostile-$shape.json"
  done
fi

if want http; then
  for c in 1 32 128; do
    log "non-streaming chat, concurrency $c"
    for via in direct gateway; do
      load "nonstream-c$c" "$via" --model chunks20 --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
    done
  done
  log "streaming chat, 20 chunks, concurrency 32"
  for via in direct gateway; do
    load stream-c32 "$via" --model chunks20 --stream --concurrency 32 --duration "$DUR" --warmup "$WARM" --requests 2000000
  done
  for c in 1 32; do
    log "paced stream (20 chunks 20 ms apart), concurrency $c"
    for via in direct gateway; do
      load "paced-c$c" "$via" --model chunks20-delay20 --stream --concurrency "$c" --duration "$PACED_DUR" --warmup "$WARM" --requests 100000
    done
  done
fi

if want proxy; then
  # The limit: a bare reverse proxy (nginx, one worker, no parsing, auth or accounting) on the
  # same mock, with wrk as the load tool, CPU per request read from /proc for each process.
  apt_install nginx nginx-light
  apt_install wrk wrk
  log "bare proxy (nginx) vs gateway, wrk, CPU per request"
  python3 "$ROOT/scripts/bench_proxy.py" --mock "$MOCK_URL" --mock-pid "$MOCK_PID" \
    --gateway "$SERVER_URL" --gateway-pid "$SERVER_PID" --key "$CLIENT_KEY" --duration "$DUR" \
    >> "$RESULTS" 2> >(tee "$OUT/proxy.txt" >&2)
fi

if want kinds; then
  # The translated path against the relay: the same 20-chunk answer through an openai, an
  # anthropic and a gemini provider, each beside its direct-to-mock row in the kind's own format.
  for kind in openai anthropic gemini; do
    gw_model=chunks20; [ "$kind" = openai ] || gw_model="$kind-chunks20"
    for shape in nonstream-c1 stream-c1 stream-c32; do
      c="${shape##*-c}"; st=(); [[ "$shape" == stream-* ]] && st=(--stream)
      log "provider kind $kind: $shape"
      load "kind-$kind-$shape" direct --format "$kind" --model chunks20 "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
      load "kind-$kind-$shape" gateway --model "$gw_model" "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
    done
  done
fi

if want ingress; then
  # Client formats in front of the same openai provider: the Anthropic Messages API and the
  # OpenAI Responses API (store: false) at the gateway against OpenAI chat straight to the mock,
  # the same 20-chunk answer.
  for f in messages:anthropic responses:responses; do
    name="${f%%:*}"; fmt="${f##*:}"
    for shape in nonstream-c1 stream-c1 stream-c32; do
      c="${shape##*-c}"; st=(); [[ "$shape" == stream-* ]] && st=(--stream)
      log "ingress $name: $shape"
      load "ingress-$name-$shape" direct --model chunks20 "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
      KEEP_FORMAT=1 load "ingress-$name-$shape" gateway --format "$fmt" --model chunks20 "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
    done
  done
fi

if want money; then
  # The cost step (ledger) and the budget step (admission: reserve the worst case, settle the
  # real cost) against the same request without them, beside direct-to-mock, in one run.
  for shape in nonstream-c1 nonstream-c32 stream-c32; do
    c="${shape##*-c}"; st=(); [[ "$shape" == stream-* ]] && st=(--stream)
    log "money: $shape, unpriced + no budget vs priced + budgeted key"
    load "money-$shape" direct --model chunks20 "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
    load "money-$shape" gateway --model chunks20 "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
    plain_key="$CLIENT_KEY"; CLIENT_KEY="$BUDGET_KEY"
    load "money-$shape-budget" gateway --model priced-chunks20 "${st[@]}" --concurrency "$c" --duration "$DUR" --warmup "$WARM" --requests 2000000
    CLIENT_KEY="$plain_key"
  done
fi

if want client; then
  log "library client: Hub::chat / Hub::chat_stream vs reqwest straight to the mock"
  [ -n "${MOCK_PID:-}" ] || start_mock
  "$BIN/nexus-bench" client --url "$MOCK_URL" --model chunks20 --requests "$CLIENT_N" \
    --warmup $((CLIENT_N / 10)) --concurrency 1,32 > "$OUT/client.jsonl" 2> "$OUT/client.err"
  cat "$OUT/client.jsonl" >> "$RESULTS"
fi

if want memory; then
  log "$OPEN_N concurrent open streams ($OPEN_MODEL)"
  read -r r0 h0 < <(rss "$SERVER_PID")
  res="$OUT/load-open-gateway.json"
  "$BIN/nexus-bench" load --url "$SERVER_URL" --key "$CLIENT_KEY" --label open-streams --model "$OPEN_MODEL" \
    --stream --concurrency "$OPEN_N" --requests "$OPEN_N" --ramp "$OPEN_RAMP" --warmup 0 --duration 60 --timeout 90 --threads 1 \
    > "$res" 2> "$OUT/load-open-gateway.err" &
  lp=$!; PIDS+=("$lp")
  open_rss=0; open_at=""
  for _ in $(seq 600); do
    kill -0 "$lp" 2>/dev/null || break
    if [ -z "$open_at" ] && grep -q '^all-open' "$OUT/load-open-gateway.err"; then
      open_at="$(grep '^all-open' "$OUT/load-open-gateway.err" | head -n1)"
      sleep 1
      read -r open_rss _ < <(rss "$SERVER_PID")
      streams="$(curl -s "$SERVER_URL/metrics" | awk '/^nexus_active_streams /{print $2}')"
      mock_rss="$(rss "$MOCK_PID" | cut -d' ' -f1)"
      echo "  $open_at; server nexus_active_streams=$streams, server RSS $((open_rss / 1024)) MB (mock $((mock_rss / 1024)) MB)"
    fi
    sleep 0.2
  done
  wait "$lp"
  read -r r1 h1 < <(rss "$SERVER_PID")
  python3 - "$res" "$open_rss" "$r0" "$r1" "$h1" "${streams:-0}" >> "$RESULTS" <<'PY'
import json, sys
res, openr, r0, r1, h1, streams = sys.argv[1:]
d = json.load(open(res))
d.update(bench="open-streams", via="gateway", active_streams_seen=int(float(streams or 0)),
         server_rss_kb={"before": int(r0), "all_open": int(openr), "after": int(r1), "hwm": int(h1)})
print(json.dumps(d))
PY
  [ -n "$open_at" ] || echo "  not every stream was open at once; see $res" >&2
  echo "  after the streams ended: server RSS $((r1 / 1024)) MB (peak $((h1 / 1024)) MB)"
fi

if want soak; then
  log "soak: $SOAK_N non-streaming requests at concurrency 32, RSS before and after"
  # Warm up first so "before" is the steady state, not the empty process.
  "$BIN/nexus-bench" load --url "$SERVER_URL" --key "$CLIENT_KEY" --model chunks20 --concurrency 32 \
    --requests $((SOAK_N / 10)) --duration 120 --warmup 0 > "$OUT/soak-warmup.json" 2>&1
  sleep 1
  read -r before _ < <(rss "$SERVER_PID")
  res="$OUT/load-soak-gateway.json"
  "$BIN/nexus-bench" load --url "$SERVER_URL" --key "$CLIENT_KEY" --label soak --model chunks20 --concurrency 32 \
    --requests "$SOAK_N" --duration 900 --warmup 0 > "$res" 2> "$OUT/load-soak-gateway.err" &
  lp=$!; PIDS+=("$lp")
  samples=()
  while kill -0 "$lp" 2>/dev/null; do
    read -r r _ < <(rss "$SERVER_PID"); samples+=("$r"); sleep 2
  done
  wait "$lp"
  sleep 1
  read -r after hwm < <(rss "$SERVER_PID")
  python3 - "$res" "$before" "$after" "$hwm" "${samples[*]:-}" >> "$RESULTS" <<'PY'
import json, sys
res, before, after, hwm, samples = sys.argv[1:]
d = json.load(open(res))
s = [int(x) for x in samples.split()] or [0]
d.update(bench="soak", via="gateway", server_rss_kb={"before": int(before), "after": int(after), "hwm": int(hwm),
         "during_min": min(s), "during_max": max(s), "samples_every_2s": s})
print(json.dumps(d))
PY
  echo "  $(python3 -c "import json,sys; d=json.load(open('$res')); print(f\"{d['ok']} answered, {d['errors']} errors, {d['rps']:.0f} req/s\")")"
  echo "  server RSS before $((before / 1024)) MB, after $((after / 1024)) MB"
fi

if [ -n "${SERVER_PID:-}" ]; then
  kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
  kill "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true
fi

if want stats; then
  log "stats writer and dashboard queries on $STATS_ROWS rows"
  mkdir -p "$ROOT/target/bench/data"
  # The large database is kept between runs (target/bench/data) so a rerun skips generating it.
  db="$ROOT/target/bench/data/stats-$STATS_ROWS.db"
  "$BIN/nexus-bench" stats --db "$db" --rows "$STATS_ROWS" --writer-records "$WRITER_N" \
    --max-gen-secs 900 > "$OUT/stats.json"
  python3 -c "import json,sys; d=json.load(open('$OUT/stats.json')); d['bench']='stats'; print(json.dumps(d))" >> "$RESULTS"
fi

if want tokens; then
  log "token counting vs Python tiktoken"
  python3 "$ROOT/scripts/bench_tokens.py" --bench-bin "$BIN/nexus-bench" --out "$OUT" "${TOKEN_ARGS[@]}" >> "$RESULTS"
fi

if want python; then
  log "Python module vs aiohttp and httpx straight to the mock (asyncio and sync)"
  py_venv
  .venv/bin/pip install -q --disable-pip-version-check aiohttp httpx
  # The module as a user installs it (a release wheel), into the test venv.
  .venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps .
  start_mock
  PY_SECS=3; PY_REPEAT=3
  [ "$SMOKE" = 1 ] && { PY_SECS=0.3; PY_REPEAT=1; }
  .venv/bin/python "$ROOT/scripts/bench_python.py" --mock "$MOCK_URL" --seconds "$PY_SECS" \
    --repeat "$PY_REPEAT" | tee "$OUT/python.txt"
  kill "$MOCK_PID" 2>/dev/null || true
fi

python3 - "$RESULTS" "$SMOKE" > "$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by[(r.get("bench"), r.get("via"))] = r
def g(b, v): return by.get((b, v))
def q(r, k, p):
    x = (r or {}).get(k) or {}
    return x.get(p, float("nan"))
mb = lambda kb: kb / 1024
print("| load | c | direct req/s | gateway req/s | gateway/direct | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | server RSS max MB |")
print("|---|---|---|---|---|---|---|---|---|")
for b in ["nonstream-c1", "nonstream-c32", "nonstream-c128", "stream-c32"]:
    d, w = g(b, "direct"), g(b, "gateway")
    if not (d and w): continue
    print(f"| {b.rsplit('-c',1)[0]} | {w['concurrency']} | {d['rps']:,.0f} | {w['rps']:,.0f} | {w['rps']/d['rps']:.0%} | "
          f"{q(d,'latency_ms','p50'):.3f} / {q(d,'latency_ms','p99'):.3f} | {q(w,'latency_ms','p50'):.3f} / {q(w,'latency_ms','p99'):.3f} | "
          f"{q(w,'latency_ms','p50')-q(d,'latency_ms','p50'):.3f} / {q(w,'latency_ms','p99')-q(d,'latency_ms','p99'):.3f} | {mb(w['server_rss_kb']['max_during']):.1f} |")
print()
print("| stream | c | req/s direct / gateway | TTFB p50 direct / gateway ms | added TTFB p50 / p99 ms | total p50 direct / gateway ms | added total p50 / p99 ms | events per response direct / gateway | frames per response (gateway) | server RSS max MB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for b in ["stream-c32", "paced-c1", "paced-c32"]:
    d, w = g(b, "direct"), g(b, "gateway")
    if not (d and w): continue
    ev = lambda r: f"{r['events']['min']}..{r['events']['max']}" if r.get("events") else "-"
    fr = f"{w['frames']['mean']:.1f}" if w.get("frames") else "-"
    print(f"| {b} | {w['concurrency']} | {d['rps']:,.0f} / {w['rps']:,.0f} | {q(d,'ttfb_ms','p50'):.3f} / {q(w,'ttfb_ms','p50'):.3f} | "
          f"{q(w,'ttfb_ms','p50')-q(d,'ttfb_ms','p50'):.3f} / {q(w,'ttfb_ms','p99')-q(d,'ttfb_ms','p99'):.3f} | "
          f"{q(d,'latency_ms','p50'):.2f} / {q(w,'latency_ms','p50'):.2f} | "
          f"{q(w,'latency_ms','p50')-q(d,'latency_ms','p50'):.3f} / {q(w,'latency_ms','p99')-q(d,'latency_ms','p99'):.3f} | "
          f"{ev(d)} / {ev(w)} | {fr} | {mb(w['server_rss_kb']['max_during']):.1f} |")
print()
kind_rows = [(k, sh) for k in ("openai", "anthropic", "gemini") for sh in ("nonstream-c1", "stream-c1", "stream-c32")
             if g(f"kind-{k}-{sh}", "direct") and g(f"kind-{k}-{sh}", "gateway")]
if kind_rows:
    print("| provider kind | load | c | req/s direct / gateway | p50 direct / gateway ms | added p50 / p99 ms | added TTFB p50 ms | events direct / gateway | added per chunk p50 µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, sh in kind_rows:
        d, w = g(f"kind-{k}-{sh}", "direct"), g(f"kind-{k}-{sh}", "gateway")
        a50 = q(w,'latency_ms','p50') - q(d,'latency_ms','p50'); a99 = q(w,'latency_ms','p99') - q(d,'latency_ms','p99')
        ev = lambda r: f"{r['events']['min']}..{r['events']['max']}" if r.get("events") else "-"
        stream = sh.startswith("stream")
        per = f"{a50 * 1000 / w['events']['max']:.2f}" if stream and w.get("events") and w['events']['max'] else "-"
        ttfb = f"{q(w,'ttfb_ms','p50') - q(d,'ttfb_ms','p50'):.3f}" if stream else "-"
        print(f"| {k} | {sh.rsplit('-c',1)[0]} | {w['concurrency']} | {d['rps']:,.0f} / {w['rps']:,.0f} | "
              f"{q(d,'latency_ms','p50'):.3f} / {q(w,'latency_ms','p50'):.3f} | {a50:.3f} / {a99:.3f} | {ttfb} | {ev(d)} / {ev(w)} | {per} |")
    print()
ing_rows = [(f, sh) for f in ("messages", "responses") for sh in ("nonstream-c1", "stream-c1", "stream-c32")
            if g(f"ingress-{f}-{sh}", "direct") and g(f"ingress-{f}-{sh}", "gateway")]
if ing_rows:
    print("| client format | load | c | req/s direct / gateway | p50 direct / gateway ms | added p50 / p99 ms | added TTFB p50 ms | events direct / gateway | added per chunk p50 µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f, sh in ing_rows:
        d, w = g(f"ingress-{f}-{sh}", "direct"), g(f"ingress-{f}-{sh}", "gateway")
        a50 = q(w,'latency_ms','p50') - q(d,'latency_ms','p50'); a99 = q(w,'latency_ms','p99') - q(d,'latency_ms','p99')
        ev = lambda r: f"{r['events']['min']}..{r['events']['max']}" if r.get("events") else "-"
        stream = sh.startswith("stream")
        per = f"{a50 * 1000 / w['events']['max']:.2f}" if stream and w.get("events") and w['events']['max'] else "-"
        ttfb = f"{q(w,'ttfb_ms','p50') - q(d,'ttfb_ms','p50'):.3f}" if stream else "-"
        print(f"| {f} | {sh.rsplit('-c',1)[0]} | {w['concurrency']} | {d['rps']:,.0f} / {w['rps']:,.0f} | "
              f"{q(d,'latency_ms','p50'):.3f} / {q(w,'latency_ms','p50'):.3f} | {a50:.3f} / {a99:.3f} | {ttfb} | {ev(d)} / {ev(w)} | {per} |")
    print()
money_rows = [sh for sh in ("nonstream-c1", "nonstream-c32", "stream-c32")
              if g(f"money-{sh}", "direct") and g(f"money-{sh}", "gateway") and g(f"money-{sh}-budget", "gateway")]
if money_rows:
    print("| money | c | req/s direct / plain / priced+budget | p50 direct / plain / priced+budget ms | added p50: plain / priced+budget ms | budget step p50 / p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for sh in money_rows:
        d, w, b = g(f"money-{sh}", "direct"), g(f"money-{sh}", "gateway"), g(f"money-{sh}-budget", "gateway")
        p = lambda r, k="p50": q(r, 'latency_ms', k)
        print(f"| {sh.rsplit('-c',1)[0]} | {w['concurrency']} | {d['rps']:,.0f} / {w['rps']:,.0f} / {b['rps']:,.0f} | "
              f"{p(d):.3f} / {p(w):.3f} / {p(b):.3f} | {p(w)-p(d):.3f} / {p(b)-p(d):.3f} | "
              f"{p(b)-p(w):+.3f} / {p(b,'p99')-p(w,'p99'):+.3f} | {w['errors']} / {b['errors']} |")
    print()
idle = g("idle", None); op = g("open-streams", "gateway"); so = g("soak", "gateway")
if idle: print(f"- Server RSS at idle: {mb(idle['server_rss_kb']['after']):.1f} MB")
for shape, what in [("tiny16mib", "a 16 MiB body of tiny messages"), ("msgs100k", "a body of 100,000 messages")]:
    h = g(f"hostile-{shape}", None)
    if h:
        s = h["server_rss_kb"]
        print(f"- Hostile body, {what} ({h['body_bytes']/1048576:.1f} MiB): HTTP {h['status']}, server peak RSS "
              f"{mb(s['hwm_before']):.1f} MB before, {mb(s['hwm_after']):.1f} MB after")
if op:
    print(f"- {op['concurrency']:,} concurrent streams: {op['max_open']:,} open at once (server gauge {op['active_streams_seen']:,}), "
          f"server RSS {mb(op['server_rss_kb']['all_open']):.1f} MB with all open, {mb(op['server_rss_kb']['after']):.1f} MB after they ended; "
          f"{op['ok']:,} completed, {op['errors']} errors, events {op['events']['min'] if op.get('events') else '-'}..{op['events']['max'] if op.get('events') else '-'}")
if so:
    s = so["server_rss_kb"]
    print(f"- Soak: {so['ok']:,} requests ({so['errors']} errors) at {so['rps']:,.0f} req/s; server RSS {mb(s['before']):.1f} MB before, "
          f"{mb(s['after']):.1f} MB after (min/max during {mb(s['during_min']):.1f}/{mb(s['during_max']):.1f} MB)")
st = g("stats", None)
if st:
    w = st["writer"]
    print(f"- Stats writer: {w['requests_per_s']:,.0f} requests/s sustained (1 usage row + 2 messages each), enqueue p50 {w['enqueue_ms']['p50']*1000:.2f} µs / p99 {w['enqueue_ms']['p99']*1000:.2f} µs")
    print(f"- Dashboard queries on {st['rows']:,} usage rows ({st['db_bytes']/1e9:.2f} GB), median of {st['reps']} (max):")
    print()
    print("| query | median ms | max ms | points |")
    print("|---|---|---|---|")
    for k, v in st["queries"].items():
        print(f"| {k} | {v['median_ms']:.2f} | {v['max_ms']:.2f} | {v['result_size']} |")
cl = {(r["mode"], r["via"], r["concurrency"]): r for r in rows if r.get("bench") == "client"}
if cl:
    print()
    print("| library client | c | direct req/s | Hub req/s | direct p50 / p99 ms | Hub p50 / p99 ms | added p50 / p99 ms | chunks direct / Hub | added per chunk p50 µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mode, via, c), h in sorted(cl.items()):
        if via != "hub": continue
        d = cl.get((mode, "direct", c))
        if not d: continue
        a50 = q(h,'latency_ms','p50') - q(d,'latency_ms','p50'); a99 = q(h,'latency_ms','p99') - q(d,'latency_ms','p99')
        per = f"{a50 * 1000 / h['chunks_per_response']:.2f}" if h['chunks_per_response'] else "-"
        print(f"| {mode} | {c} | {d['rps']:,.0f} | {h['rps']:,.0f} | {q(d,'latency_ms','p50'):.3f} / {q(d,'latency_ms','p99'):.3f} | "
              f"{q(h,'latency_ms','p50'):.3f} / {q(h,'latency_ms','p99'):.3f} | {a50:.3f} / {a99:.3f} | "
              f"{d['chunks_per_response']:.0f} / {h['chunks_per_response']:.0f} | {per} |")
tk = [r for r in rows if r.get("bench") == "tokens"]
if tk:
    print()
    print("| text | encoding | tokens | Python tiktoken M tok/s | tiktoken-rs M tok/s | nexus M tok/s | nexus MB/s | nexus / Python | counts equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in tk:
        print(f"| {r['text']} | {r['encoding']} | {r['tokens']:,} | {r['python_tps']/1e6:.2f} | {r['tiktoken_rs_tps']/1e6:.2f} | {r['nexus_tps']/1e6:.2f} | "
              f"{r['nexus_mbps']:.1f} | {r['nexus_tps']/r['python_tps']:.2f}× | {'yes' if r['counts_equal'] else 'NO'} |")
PY
log "summary ($OUT/summary.md)"
cat "$OUT/summary.md"
