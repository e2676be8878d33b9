#!/usr/bin/env bash
# Debian's chromium for the dashboard's browser tests (tests/ui, tests/js). Idempotent: does
# nothing when /usr/bin/chromium exists. Never downloads a browser build from elsewhere
# (playwright-core drives this system chromium through executablePath).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: apt-get not found; install Debian's 'chromium' package yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
test -x /usr/bin/chromium
echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
