#!/usr/bin/env bash
# Sets up and runs every test: Rust (fmt, clippy, unit + integration), C (header freshness,
# -Wall -Wextra -Werror, valgrind), Python (wheel, pytest, stubtest, the openai and anthropic SDKs
# against the server), the openai Node SDK against the server, Claude Code and Codex CLI against
# the server and the browser UI (headless Chromium). Installs what it needs itself.
source "$(dirname "$0")/common.sh"
# The admin UI is embedded at build time: install its npm packages before anything compiles.
ui_deps

log "rustfmt"
cargo fmt --all -- --check

log "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "Rust tests (unit, integration against the mock upstream)"
cargo test --workspace --locked

bash scripts/test-server-py.sh
bash scripts/test-node-sdk.sh
bash scripts/test-claude-code.sh
bash scripts/test-codex.sh
bash scripts/test-c.sh
bash scripts/test-python.sh
bash scripts/test-ui.sh

log "all tests passed"
