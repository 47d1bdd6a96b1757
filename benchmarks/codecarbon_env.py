"""CodeCarbon in its own virtualenv, benchmarks/.venv-codecarbon, made on demand: not a project dependency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-codecarbon"
PACKAGE = "codecarbon"

# Runs inside the CodeCarbon venv. Every connection to anything but loopback is refused (and counted)
# before CodeCarbon is imported, so the offline tracker provably stays offline.
TRACKER_SCRIPT = r"""
import ipaddress, socket, sys
attempts = []
_connect = socket.socket.connect
def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        attempts.append(host)
        raise OSError("benchmark: network disabled")
    return _connect(self, address)
socket.socket.connect = _loopback_only
from codecarbon import OfflineEmissionsTracker
tracker = OfflineEmissionsTracker(country_iso_code="DEU", measure_power_secs=1, save_to_file=False,
                                  log_level="error", allow_multiple_runs=True)
tracker.start()
print("ready", flush=True)
sys.stdin.readline()
emissions = tracker.stop()
print(f"done emissions_kg={emissions} network_attempts={len(attempts)}", flush=True)
"""


def python() -> Path:
    return VENV / "bin" / "python"


def ensure(timeout_s: float = 300.0) -> tuple[Path | None, str]:
    """The CodeCarbon venv's python, creating the venv and installing CodeCarbon from PyPI if needed.

    Returns (python, version) or (None, reason it is not available).
    """
    check = [str(python()), "-c", "import codecarbon; print(codecarbon.__version__)"]
    if python().exists():
        done = subprocess.run(check, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return python(), done.stdout.strip()
    try:
        # The base interpreter, not the project's venv, so nothing of ours leaks into CodeCarbon's env.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run(
            [base, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=120
        )
        print(f"installing {PACKAGE} into {VENV} (once) ...", file=sys.stderr, flush=True)
        subprocess.run(
            [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PACKAGE],
            check=True,
            capture_output=True,
            timeout=timeout_s,
            env={**os.environ, "PIP_NO_INPUT": "1"},
        )
        done = subprocess.run(check, capture_output=True, text=True, timeout=120, check=True)
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr or b""
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        lines = [line for line in text.strip().splitlines() if not line.startswith("WARNING")]
        return None, f"installing {PACKAGE} failed: {lines[-1] if lines else exc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"installing {PACKAGE} failed: {exc}"
    return python(), done.stdout.strip()
