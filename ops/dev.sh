#!/usr/bin/env bash
# The README's two set-up commands, and what CI runs.
#
#   bash ops/dev.sh run    install (if needed) and run the one-process platform (SQLite, demo, read models)
#   bash ops/dev.sh test   install everything the test suite needs, then run the whole suite
#   bash ops/dev.sh mutations  install the same, then the guarantee mutation check
#                          (tests/mutations/run.py; map: tests/GUARANTEES.md)
#   bash ops/dev.sh check  install the same Python extras, then the static checks: ruff, mypy
#                          and the layering contracts (lint-imports; all configured in pyproject.toml)
#   bash ops/dev.sh python print the Python the commands above use (creating the virtualenv)
#
# Installs are idempotent: Debian packages via apt-get (as root, or with sudo); Python
# packages via pip into a project virtualenv, .venv in the checkout (XPLATFORM_VENV names
# another), created on first use from $PYTHON (default python3). Why always a virtualenv:
# a distribution's own Python refuses pip installs (PEP 668, "externally-managed-environment"),
# and a virtualenv never touches the system's packages. Inside an activated virtualenv
# (VIRTUAL_ENV set) that one is used instead. Tests and the mutation runner start their
# children with sys.executable, so they stay in the same virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PYTHON=${PYTHON:-python3}
VENV=${XPLATFORM_VENV:-.venv}
# real servers the integration tests start (PostgreSQL, ZooKeeper); headless Chromium + its driver
# for the demo-page browser test; node runs the browser client's JS tests (node --test);
# prometheus (server + promtool) checks ops/prometheus and evaluates its rules and the dashboard
DEBIAN_PACKAGES=(postgresql zookeeper chromium chromium-driver nodejs prometheus)

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_debian() {  # $@: Debian packages (default: DEBIAN_PACKAGES); only the missing ones
  local missing=()
  (($#)) || set -- "${DEBIAN_PACKAGES[@]}"
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

select_python() {  # sets PYTHON: the activated virtualenv's python, else $VENV's (created if missing)
  if [[ -n ${VIRTUAL_ENV:-} ]]; then
    PYTHON=${PYTHON:-python3}
    return
  fi
  if ! "$VENV/bin/python" -c "" 2>/dev/null; then  # missing, or made by a Python that is gone
    # Debian/Ubuntu ship venv's pip bootstrap separately (python3-venv)
    if ! "$BASE_PYTHON" -c "import ensurepip, venv" 2>/dev/null && command -v apt-get >/dev/null; then
      install_debian python3-venv
    fi
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV"
    echo "created the project virtualenv $VENV (from $BASE_PYTHON)" >&2
  fi
  PYTHON=$VENV/bin/python
}

install_python() {  # $1: extras, e.g. "test,load"; empty for the runtime only
  local target=.
  [[ -n ${1:-} ]] && target=".[$1]"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e "$target"
}

case "${1:-}" in
  run|test|mutations|check|python) select_python ;;
esac

case "${1:-}" in
  python)
    echo "$PYTHON"
    ;;
  run)
    install_python readmodels  # secantusdb: the read models' embedded MongoDB-wire server (a child process)
    shift
    exec "$PYTHON" -m ops.cli run "$@"
    ;;
  test)
    install_debian
    install_python test,load
    shift
    exec "$PYTHON" -m pytest -q "$@"
    ;;
  check)
    install_python test,load
    scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    "$PYTHON" -m ruff check .
    "$PYTHON" -m mypy
    "$scripts/lint-imports" --no-cache
    ;;
  mutations)
    install_debian
    install_python test,load
    shift
    exec "$PYTHON" -m tests.mutations.run "$@"
    ;;
  *)
    echo "usage: bash ops/dev.sh run|test|mutations|check|python [args]" >&2
    exit 64
    ;;
esac
