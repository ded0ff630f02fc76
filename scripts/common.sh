# Shared set-up steps for the scripts in this folder. Each step is idempotent and installs what it
# needs from the package registries, so a fresh machine (and CI) needs nothing installed by hand.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
  # apt_install <binary> <package...>: installs Debian packages when the binary is missing.
  local bin="$1"; shift
  if ! command -v "$bin" >/dev/null 2>&1; then
    log "installing $* (Debian)"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
  fi
}

ui_deps() {
  if [ ! -d nexus-server/ui/node_modules ] || [ nexus-server/ui/package-lock.json -nt nexus-server/ui/node_modules ]; then
    log "installing UI packages (npm ci)"
    npm ci --prefix nexus-server/ui --no-audit --no-fund --loglevel=error
    touch nexus-server/ui/node_modules
  fi
}

py_venv() {
  if [ ! -x .venv/bin/python ]; then
    log "creating Python venv in .venv"
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c "import maturin, pytest, pytest_asyncio, pytest_timeout, openai, anthropic, mypy, langchain_openai" 2>/dev/null; then
    log "installing Python test tools"
    .venv/bin/pip install -q --disable-pip-version-check maturin pytest pytest-asyncio pytest-timeout openai anthropic mypy langchain-openai
  fi
}

start_mock_upstream() {
  # start_mock_upstream <binary> <stdout file>: starts the mock upstream in the background, sets
  # MOCK_PID and MOCK_URL (its first stdout line), and kills it when the script exits.
  mkdir -p "$(dirname "$2")"
  "$1" > "$2" &
  MOCK_PID=$!
  trap 'kill $MOCK_PID 2>/dev/null || true' EXIT
  MOCK_URL=""
  for _ in $(seq 100); do
    MOCK_URL="$(head -n1 "$2" 2>/dev/null || true)"
    [ -n "$MOCK_URL" ] && break
    sleep 0.1
  done
  [ -n "$MOCK_URL" ] || { echo "mock upstream did not start" >&2; exit 1; }
}
