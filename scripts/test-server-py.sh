#!/usr/bin/env bash
# Drives the real nexus-server binary with the official `openai` (chat, embeddings, Responses) and
# `anthropic` Python SDKs and LangChain: builds the server and the mock upstream, makes .venv (openai, anthropic,
# langchain-openai, pytest), then runs nexus-server/tests/python.
# Extra arguments go to pytest (e.g. -k stream).
source "$(dirname "$0")/common.sh"

log "building nexus-server and nexus-mock-upstream"
cargo build -p nexus-server -p nexus --features nexus/testing --bins

py_venv

log "openai SDK (chat, embeddings, responses), LangChain and anthropic SDK tests against nexus-server"
.venv/bin/python -m pytest -q -p no:cacheprovider nexus-server/tests/python/test_openai_sdk.py \
  nexus-server/tests/python/test_openai_embeddings.py nexus-server/tests/python/test_anthropic_sdk.py \
  nexus-server/tests/python/test_openai_responses.py "$@"
