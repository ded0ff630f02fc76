#!/usr/bin/env bash
# The C API: the committed header is current, the C tests (-Wall -Wextra -Werror) pass against
# the mock upstream under valgrind with no errors and no definite or indirect leaks, and the C
# example builds shared and static and runs.
source "$(dirname "$0")/common.sh"
apt_install valgrind valgrind
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

log "C API: header freshness"
cargo test -p nexus-ffi --locked --test header

log "C API: building the library and the mock upstream"
cargo build --locked -p nexus-ffi
cargo build --locked -p nexus --features testing --bin nexus-mock-upstream

mkdir -p "$TARGET/c"
MOCK_OUT="$TARGET/c/mock.out"
"$TARGET/debug/nexus-mock-upstream" > "$MOCK_OUT" &
MOCK_PID=$!
trap 'kill $MOCK_PID 2>/dev/null || true' EXIT
MOCK_URL=""
for _ in $(seq 100); do
  MOCK_URL="$(head -n1 "$MOCK_OUT" 2>/dev/null || true)"
  [ -n "$MOCK_URL" ] && break
  sleep 0.1
done
[ -n "$MOCK_URL" ] || { echo "mock upstream did not start" >&2; exit 1; }

log "C API: tests under valgrind"
gcc -std=c11 -g -Wall -Wextra -Werror -Iinclude nexus-ffi/tests/c/test_nexus.c \
  -L"$TARGET/debug" -lnexus_ffi -lpthread -Wl,-rpath,"$TARGET/debug" -o "$TARGET/c/test_nexus"
# "possibly lost" is not an error here: the BPE tables live in process-wide statics whose hash
# maps are only pointed at from inside (hashbrown's control bytes), which valgrind reports as
# possibly lost although they are reachable. Definite and indirect leaks and every memory error
# fail the run.
valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=9 \
  "$TARGET/c/test_nexus" "$MOCK_URL"

log "C API: the example, shared and static"
make -s -C examples/c clean all TARGET_DIR="$TARGET"
examples/c/stream_chat "$MOCK_URL" gpt-4o-mini
examples/c/stream_chat_static "$MOCK_URL" gpt-4o-mini > /dev/null
echo "C API: ok"
