#!/usr/bin/env bash
# Lint, as scripts/test.sh (and so CI) runs it before the tests: ruff's rules, ruff's formatting and mypy's types
# over src/, as configured in pyproject.toml. ruff and mypy come from the dev extra, pinned in
# requirements/constraints.txt, in the environment setup_helical_env.sh made. Prints every finding (for the
# formatting: the diff) and exits 1 when there is one.
# Fixes: `ruff check --fix src` (import order), `ruff format src` (layout); mypy's findings are fixed by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f .helical-env ] || { echo "run ./setup_helical_env.sh first" >&2; exit 1; }
bin="$(cat .helical-env)"
failed=()
step() {  # name command...: runs it, prints how long it took, remembers a failure
  local name=$1 start=$SECONDS
  shift
  echo "[lint] $name"
  if "$@"; then
    echo "[lint] $name: ok ($((SECONDS - start)) s)"
  else
    echo "[lint] $name: FAILED ($((SECONDS - start)) s)"
    failed+=("$name")
  fi
}
step "ruff check" "$bin/python" -m ruff check src
step "ruff format --check" "$bin/python" -m ruff format --check --diff src
# files and options: [tool.mypy] in pyproject.toml; its cache is .mypy_cache (git-ignored): ~75 s of CPU cold, ~5 s warm
step "mypy" "$bin/python" -m mypy
if [ ${#failed[@]} -gt 0 ]; then
  echo "[lint] failed: ${failed[*]} (the findings are above)" >&2
  exit 1
fi
