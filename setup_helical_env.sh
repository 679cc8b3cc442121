#!/usr/bin/env bash
# One-step environment set-up for helical-airflow.
#
#   ./setup_helical_env.sh            # conda/mamba env `helical-package` when conda is present, else ./.venv
#   ./setup_helical_env.sh --venv     # force a plain venv (what CI uses)
#   ./setup_helical_env.sh --help
#
# Installs Python 3.12 packages pinned by requirements/constraints.txt: helical (requirements/helical.txt, torch), Apache Airflow 3
# with the Celery executor (extra `airflow`), MLflow client (extra `tracking`), test tools (extra `dev`) and this project in editable mode.
# Idempotent: a second run with nothing changed only checks and exits in seconds.
# Writes .helical-env (the env's bin folder), which scripts/run_sample.sh and scripts/test.sh use.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
ENV_NAME="helical-package"
VENV_DIR="${HELICAL_AIRFLOW_VENV:-$here/.venv}"
EXTRAS="${HELICAL_AIRFLOW_EXTRAS:-airflow,tracking,storage,compare,dev}"
mode="auto"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$1" >&2; [ $# -gt 1 ] && printf '  fix: %s\n' "$2" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --venv) mode="venv" ;;
    --conda) mode="conda" ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $arg" "see ./setup_helical_env.sh --help" ;;
  esac
done

# --- platform ---------------------------------------------------------------------------------------------
os="$(uname -s)"; arch="$(uname -m)"
case "$os" in
  Linux) say "platform: Linux $arch ($(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown distribution}"))" ;;
  Darwin) say "platform: macOS $arch (CPU/MPS only: GPU runs need Linux with CUDA)" ;;
  *) die "unsupported platform: $os $arch" "use Linux or macOS (on Windows, run inside WSL2)" ;;
esac

# --- pick the environment -------------------------------------------------------------------------------
conda_bin=""
for c in mamba micromamba conda; do command -v "$c" >/dev/null 2>&1 && { conda_bin="$c"; break; }; done
if [ "$mode" = "conda" ] && [ -z "$conda_bin" ]; then
  die "--conda asked for but neither mamba nor conda is on PATH" "install Miniforge, or run without --conda for a venv"
fi
[ "$mode" = "auto" ] && mode=$([ -n "$conda_bin" ] && echo conda || echo venv)

find_python312() {
  local candidate
  for candidate in python3.12 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/"3.12*/bin/python3.12 \
                   /usr/bin/python3.12 /usr/local/bin/python3.12 /opt/homebrew/bin/python3.12; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"; return 0
    fi
  done
  return 1
}

if [ "$mode" = "conda" ]; then
  if ! "$conda_bin" env list | awk '{print $1}' | grep -qx "$ENV_NAME"; then
    say "creating $conda_bin env $ENV_NAME (Python 3.12)"
    "$conda_bin" create -y -n "$ENV_NAME" python=3.12 pip
  else
    say "using existing $conda_bin env $ENV_NAME"
  fi
  bin_dir="$("$conda_bin" run -n "$ENV_NAME" python -c 'import sys, os; print(os.path.dirname(sys.executable))')"
else
  if [ ! -x "$VENV_DIR/bin/python" ]; then
    py="$(find_python312)" || die "Python 3.12 not found (helical 3.1 needs exactly 3.12)" \
      "install it: 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv' or 'brew install python@3.12'"
    say "creating venv $VENV_DIR with $py"
    "$py" -m venv "$VENV_DIR"
  else
    say "using existing venv $VENV_DIR"
  fi
  bin_dir="$VENV_DIR/bin"
fi
"$bin_dir/python" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' 2>/dev/null \
  || die "the environment at $bin_dir is not Python 3.12" "remove it ($VENV_DIR or conda env $ENV_NAME) and run again"

# --- install (skipped when the pins have not changed) ---------------------------------------------------------
stamp="$bin_dir/../.helical-airflow-setup"
want="$(cat requirements/helical.txt requirements/constraints.txt pyproject.toml | sha256sum | cut -c1-16)-$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$bin_dir/python" -m pip check >/dev/null 2>&1 \
   && "$bin_dir/python" -c 'import helical_airflow' >/dev/null 2>&1; then
  say "packages already up to date (helical $("$bin_dir/python" -c 'from importlib.metadata import version; print(version("helical"))'))"
else
  say "installing helical (requirements/helical.txt) and helical-airflow[$EXTRAS]: a few minutes the first time"
  log="$(mktemp)"
  if ! { "$bin_dir/python" -m pip install --upgrade pip && \
         "$bin_dir/python" -m pip install -c requirements/constraints.txt -r requirements/helical.txt -e ".[$EXTRAS]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "pip install failed (full log: $log)" "check access to PyPI (and disk space: torch needs ~8 GB), then run again"
  fi
  rm -f "$log"
  "$bin_dir/python" -m pip check
  echo "$want" > "$stamp"
  say "installed: $("$bin_dir/python" -c 'from importlib.metadata import version as v
print(", ".join(f"{n} {v(n)}" for n in ("helical", "torch", "transformers", "apache-airflow", "helical-airflow")))')"
fi
# flash-attn for helical's Tahoe code, which imports it at module import even when it runs torch attention on a CPU
# (models/tahoe). PyPI has only its source, which compiles CUDA kernels by default: on a machine without CUDA it is
# built without them (8 s; the adapter then uses torch attention). With CUDA, install helical's prebuilt wheel instead.
if ! "$bin_dir/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("flash_attn") is None)' 2>/dev/null; then
  say "installing flash-attn for Tahoe (CPU build, no CUDA kernels)"
  FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE \
    "$bin_dir/python" -m pip install -q --no-build-isolation "flash-attn==2.8.3.post2" \
    || die "installing flash-attn failed" "run again; Tahoe needs it (the other models do not)"
fi
echo "$bin_dir" > .helical-env
say "environment ready: $bin_dir"
say "next: scripts/run_sample.sh (embed data/sample.h5ad offline) or scripts/test.sh (the test suite)"
say "activate it in a shell with: source $bin_dir/activate$([ "$mode" = conda ] && echo "  (or: conda activate $ENV_NAME)")"
