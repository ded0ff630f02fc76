#!/usr/bin/env bash
# Browser test of the admin UI: Debian's headless Chromium driven by playwright-core against the
# real nexus-server and the mock upstream (nexus-server/ui/tests/ui.test.mjs). Screenshots of
# every page, in both themes and at phone width, land in test-output/ui/.
source "$(dirname "$0")/common.sh"

apt_install chromium chromium
ui_deps

log "building nexus-server and the mock upstream"
cargo build --locked -p nexus-server
cargo build --locked -p nexus --features testing --bin nexus-mock-upstream

log "admin UI browser test (headless Chromium)"
rm -rf test-output/ui
CHROMIUM="$(command -v chromium)" node --test --test-reporter=spec nexus-server/ui/tests/ui.test.mjs
log "UI screenshots: test-output/ui/"
