"""A private embedded PostgreSQL (pgserver) that a test may stop and start again without
disturbing any other test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class PrivateServer:
    def __init__(self, server: Any) -> None:
        self._server = server
        self.uri: str = server.get_uri()
        self._socket_dir = server.get_postmaster_info().socket_dir

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[import-untyped]

        pg_ctl(list(args), pgdata=self._server.pgdata, user=self._server.system_user,
               timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-w", "stop", "-m", "fast")

    def start(self) -> None:
        """Start again on the same socket directory, so the same URI reaches it."""
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}",
                     "-l", str(self._server.pgdata / "log"), "start")

    def restart(self) -> None:
        self._pg_ctl("-w", "restart", "-m", "fast")


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # type: ignore[import-untyped]
    # pgserver runs postgres as an unprivileged user when we are root: it must reach the dir
    base = Path(tempfile.mkdtemp(prefix="jsrt-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    server = pgserver.get_server(base / "data", cleanup_mode="stop")
    private = PrivateServer(server)
    try:
        yield private
    finally:
        # pgserver's own cleanup only stops the postmaster it started, not a restarted one
        with contextlib.suppress(subprocess.CalledProcessError):
            private.stop()
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
