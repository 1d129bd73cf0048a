#!/usr/bin/env bash
# The GPU benchmark in one call (<= 8 minutes on one H100/H200), from the checkout alone:
#   benchmarks/gpu/run.sh                  # installs maezoo + transformers, then runs benchmarks/gpu/bench.py
#   benchmarks/gpu/run.sh --dry-run        # CPU, toy sizes, no install, well under a minute (CI runs it)
#   benchmarks/gpu/run.sh --sections image # any bench.py option passes through (--help lists them)
# Set MAEZOO_WHEELS=<folder of wheels> on a machine without a package index (pip --no-index --find-links),
# or MAEZOO_SKIP_INSTALL=1 where maezoo and transformers are installed already.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if [[ " $* " != *" --dry-run "* && -z "${MAEZOO_SKIP_INSTALL:-}" ]]; then
  pip_args=(-q install -e . transformers)
  if [[ -n "${MAEZOO_WHEELS:-}" ]]; then pip_args=(-q install --no-index --find-links "$MAEZOO_WHEELS" -e . transformers); fi
  if ! "$PY" -m pip "${pip_args[@]}"; then
    if "$PY" -c "import maezoo, transformers" 2>/dev/null; then
      echo "run.sh: pip install failed; maezoo and transformers import already, going on" >&2
    else
      echo "run.sh: could not install maezoo and transformers (no package index?); set MAEZOO_WHEELS to a folder of wheels" >&2
      exit 2
    fi
  fi
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu/bench.py "$@"
