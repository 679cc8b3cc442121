#!/usr/bin/env bash
# The test suite, as CI runs it: lints src/ (scripts/lint.sh: ruff, ruff format, mypy), installs the system
# services the tests use (when root and missing), then runs pytest in the environment setup_helical_env.sh made.
# Extra arguments go to pytest, e.g.
#   scripts/test.sh -m "not slow"      # the quick loop
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f .helical-env ] || { echo "run ./setup_helical_env.sh first" >&2; exit 1; }
bin="$(cat .helical-env)"
# ruff check, ruff format --check and mypy over src/ first: a finding fails the run before any test (issue 18)
scripts/lint.sh
PYTHON="$bin/python" scripts/install_test_deps.sh
export PATH="$bin:$PATH"
set +e
"$bin/python" -m pytest --durations=25 "$@"
rc=$?
set -e
[ $rc = 5 ] && { echo "pytest collected no tests: that is a failure here" >&2; exit 1; }
if compgen -G "test-artifacts/screenshots/*" >/dev/null; then
  echo "browser test screenshots (tests/e2e/test_browser.py):"
  ls -1 "$PWD"/test-artifacts/screenshots/*
fi
exit $rc
