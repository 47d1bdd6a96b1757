#!/usr/bin/env bash
# The GPU validation kit on a lent GPU machine, in one command: a self-check (seconds), then the full
# kit (about 3 minutes), everything under OUTDIR with a log. Exits 0 even when steps failed: the
# reports say what failed and why. Reads only; never changes GPU settings.
#
#   scripts/validate-gpu-device.sh OUTDIR
#   PYTHON=/opt/venv/bin/python3 KIT_ARGS=--quick scripts/validate-gpu-device.sh OUTDIR
set -u
out="${1:?usage: $0 OUTDIR}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
KIT_ARGS="${KIT_ARGS:-}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/validate-gpu.log"
cd "$repo" || exit 0
{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm)"
  echo "== python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1)"
  echo "== pynvml: $("$PYTHON" -c 'import pynvml; print(pynvml.__file__)' 2>&1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>&1
    nvidia-smi --query-gpu=name,driver_version,pstate,power.draw,power.limit,clocks.sm,mig.mode.current \
      --format=csv 2>&1
  else
    echo "nvidia-smi: not found (the kit needs only libnvidia-ml and libcuda)"
  fi
  echo "== self-check"
  timeout --kill-after=15 120 "$PYTHON" -m exporter.validate_gpu --selfcheck-only --out "$out/selfcheck"
  echo "== self-check exit status $?"
  echo "== full kit ${KIT_ARGS}"
  # shellcheck disable=SC2086 # KIT_ARGS holds several arguments on purpose
  timeout --kill-after=20 400 "$PYTHON" -m exporter.validate_gpu --out "$out/full" $KIT_ARGS
  echo "== kit exit status $? (0: every step ok, 1: some step failed, see $out/full/report.md)"
  ls -la "$out/full" 2>&1
} 2>&1 | tee "$log"
exit 0
