#!/usr/bin/env bash
# Sets up and starts NexusAI Hub on its embedded default: ./nexus.db, admin UI at http://127.0.0.1:8000/.
# Extra arguments go to nexus-server (e.g. --listen 0.0.0.0:8000 --db /var/lib/nexus/nexus.db).
source "$(dirname "$0")/common.sh"
ui_deps
log "building nexus-server (release)"
cargo build --release --locked -p nexus-server
log "starting nexus-server"
exec target/release/nexus-server "$@"
