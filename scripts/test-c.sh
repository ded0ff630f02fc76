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

start_mock_upstream "$TARGET/debug/nexus-mock-upstream" "$TARGET/c/mock.out"

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
