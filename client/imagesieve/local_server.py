"""Start ``imagesieve serve`` as a child process on a free loopback port, for
the demo, tests and benchmarks (needs the server, imagesieve-server, installed)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading


#: Environment variable naming the pid the server must not outlive (see
#: ``imagesieve_server.server.die_with_parent``). The child arranges this
#: itself after exec: a ``preexec_fn`` runs Python between fork and exec,
#: which deadlocked when the parent had other threads (seen in CI with
#: gRPC and jemalloc threads alive).
PARENT_PID_ENV = "IMAGESIEVE_DIE_WITH_PARENT"


class LocalServer:
    """``with LocalServer(["--max-batch-size", "16"]) as srv: Client(srv.address)``.

    Stops with SIGTERM (graceful drain) on exit; ``returncode`` tells how it ended.
    Collections go to ``data_dir`` (default: a temporary folder removed on stop).
    """

    def __init__(self, args: list[str] | None = None, model: str | None = None,
                 startup_timeout: float = 120.0, env: dict | None = None, data_dir: str | None = None):
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="imagesieve-data-")
        self.data_dir = data_dir or self._tmp.name
        self.args = ["--address", "127.0.0.1:0", "--data-dir", self.data_dir,
                     *(["--model", model] if model else []), *(args or [])]
        self.startup_timeout = startup_timeout
        self.env = {**os.environ, **(env or {}), PARENT_PID_ENV: str(os.getpid())}
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.log: list[str] = []
        self.returncode: int | None = None

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "imagesieve.cli", "serve", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env)
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.log.append(line.rstrip())
                m = re.search(r"imagesieve: serving \S+ on (\S+:\d+)", line)
                if m:
                    self.address = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(self.startup_timeout) or not self.address:
            self.stop()
            raise RuntimeError("imagesieve server did not start:\n" + "\n".join(self.log[-30:]))

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.returncode = self.proc.returncode
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.returncode
