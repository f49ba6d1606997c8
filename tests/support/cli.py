"""The real `jsrt` command in a subprocess, as a person or a script runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(db_url: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`jsrt ARGV...` on `db_url` (stdout, stderr, exit code); `env` adds variables."""
    full = {**os.environ, "DATABASE_URL": db_url, "JSRT_LOG_FORMAT": "json",
            "JSRT_WORKERS": "1", "JSRT_METRICS_ADDR": "127.0.0.1:0", **env}
    return subprocess.run([sys.executable, "-m", "consumer.cli", *argv], env=full,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
