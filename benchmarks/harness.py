"""What the benchmark scripts share. Every measured run is a fresh subprocess (the script re-invoked
with `--worker ...`) so libraries never share warm caches or thread pools; the worker prints one
`RESULT {json}` line and the driver collects it."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

PREFIX = "RESULT "


def cpu_model() -> str:
    "The CPU's model name as /proc/cpuinfo reports it."
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(result: dict):
    "Called in the worker: hand the run's figures to the driver."
    print(PREFIX + json.dumps(result), flush=True)


def run_worker(script: str, args) -> dict:
    "Run `script` with `args` in a new Python process and return the result it emitted."
    proc = subprocess.run([sys.executable, os.path.abspath(script), *map(str, args)], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"{os.path.basename(script)} {' '.join(map(str, args))} failed "
                           f"with exit code {proc.returncode}")
    return json.loads(lines[-1][len(PREFIX):])
