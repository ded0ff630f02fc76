#!/usr/bin/env bash
# The official `openai` Node SDK against nexus-server: installs the pinned SDK
# (tests/sdk/node, `npm ci` into .cache/sdk/node), builds the server and the mock upstream, and
# runs tests/sdk/node/openai.test.mjs with node:test (chat, Responses, embeddings, every
# provider kind and a Responses relay; everything on 127.0.0.1).
source "$(dirname "$0")/common.sh"

SDK_DIR=.cache/sdk/node
if [ ! -d "$SDK_DIR/node_modules/openai" ] || ! cmp -s tests/sdk/node/package-lock.json "$SDK_DIR/package-lock.json"; then
  log "installing the openai Node SDK (npm ci, pinned in tests/sdk/node)"
  mkdir -p "$SDK_DIR"
  cp tests/sdk/node/package.json tests/sdk/node/package-lock.json "$SDK_DIR/"
  npm ci --prefix "$SDK_DIR" --no-audit --no-fund --loglevel=error
fi

log "building nexus-server and nexus-mock-upstream"
cargo build -p nexus-server -p nexus --features nexus/testing --bins

log "openai Node SDK tests against nexus-server"
# The test imports `openai` from the SDK's install folder.
cp tests/sdk/node/openai.test.mjs "$SDK_DIR/"
NEXUS_ROOT="$ROOT" node --test --test-reporter=spec "$SDK_DIR/openai.test.mjs"
