#!/usr/bin/env bash
# The Python module: `pip install .` builds and installs the abi3 wheel in a fresh venv and
# `import nexus` works there; the same install goes into .venv, where mypy.stubtest checks the
# stubs against the built module, mypy checks the package, tests and examples, pytest runs
# nexus-py/tests against the mock upstream, and each example in examples/python runs against it.
# Extra arguments go to pytest (e.g. -k stream).
source "$(dirname "$0")/common.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
START=$SECONDS

py_venv

log "Python: building the mock upstream"
cargo build --locked -p nexus --features testing --bin nexus-mock-upstream
export NEXUS_MOCK_BIN="$TARGET/debug/nexus-mock-upstream"

# A fresh venv every run: `pip install .` exactly as a user runs it (isolated build env with
# maturin from the registry, release build), then the import from outside the source tree.
log "Python: pip install . into a fresh venv"
FRESH="$TARGET/py-fresh-venv"
rm -rf "$FRESH"
python3 -m venv "$FRESH"
"$FRESH/bin/pip" install -q --disable-pip-version-check .
(cd / && "$FRESH/bin/python" -c "import nexus, sys; h = nexus.Hub(); assert h.count_tokens('gpt-4o', 'hello world')['tokens'] == 2; print('import nexus', nexus.__version__, 'ok on', sys.version.split()[0])")
rm -rf "$FRESH"

# The same command into .venv; cargo's release artifacts from the step above are reused.
log "Python: pip install . into .venv"
.venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps .

log "Python: mypy.stubtest and mypy"
.venv/bin/python -m mypy.stubtest nexus._nexus
.venv/bin/python -m mypy --strict nexus-py/python/nexus examples/python
.venv/bin/python -m mypy nexus-py/tests

log "Python: pytest against the mock upstream"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

log "Python: the examples against the mock upstream"
start_mock_upstream "$NEXUS_MOCK_BIN" "$TARGET/py/mock.out"

run_example() {
  # run_example <expected substring> <script> <args...>: runs it and checks its output.
  local want="$1"; shift
  local out
  out="$(.venv/bin/python "$@")"
  printf '%s\n' "$out"
  grep -qF -- "$want" <<<"$out" || { echo "example $1: expected '$want' in its output" >&2; exit 1; }
}
run_example "hello from the mock" examples/python/stream_chat.py "$MOCK_URL" gpt-4o-mini "hello from the mock"
run_example "4 requests" examples/python/async_chat.py "$MOCK_URL" chunks3
run_example "2 tokens (exact, o200k_base)" examples/python/count_tokens.py gpt-4o hello world
# Without an upstream the examples say what to pass and exit 2.
if .venv/bin/python examples/python/stream_chat.py 2>/dev/null; then
  echo "stream_chat.py without a base URL should fail" >&2; exit 1
fi
echo "Python: ok in $((SECONDS - START))s"
