#!/usr/bin/env bash
# The README's two set-up commands, and what CI runs.
#
#   bash ops/dev.sh run    install (if needed) and run the one-process platform (SQLite, demo)
#   bash ops/dev.sh test   install everything the test suite needs, then run the whole suite
#   bash ops/dev.sh mutations  install the same, then the guarantee mutation check
#                          (tests/mutations/run.py; map: tests/GUARANTEES.md)
#
# Installs are idempotent: Debian packages via apt-get (as root, or with sudo), Python
# packages via pip into the current Python (use a virtualenv if you prefer; activate it first).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# real servers the integration tests start (PostgreSQL, ZooKeeper); headless Chromium + its driver
# for the demo-page browser test; node runs the browser client's JS tests (node --test)
DEBIAN_PACKAGES=(postgresql zookeeper chromium chromium-driver nodejs)

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_debian() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_python() {  # $1: extras, e.g. "test,load"; empty for the runtime only
  local target=.
  [[ -n ${1:-} ]] && target=".[$1]"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e "$target"
}

case "${1:-}" in
  run)
    install_python ""
    shift
    exec "$PYTHON" -m infrastructure.cli run "$@"
    ;;
  test)
    install_debian
    install_python test,load
    shift
    exec "$PYTHON" -m pytest -q "$@"
    ;;
  mutations)
    install_debian
    install_python test,load
    shift
    exec "$PYTHON" -m tests.mutations.run "$@"
    ;;
  *)
    echo "usage: bash ops/dev.sh run|test|mutations [args]" >&2
    exit 64
    ;;
esac
