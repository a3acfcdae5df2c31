"""LocalServer's child must not outlive its parent: kill -9 the process that
started it and the server goes away too (no orphan left by a killed test
run or demo)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PARENT = """
import sys, time
from imagesieve.local_server import LocalServer
srv = LocalServer(["--max-batch-size", "4"], model=sys.argv[1]).__enter__()
print(srv.proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:          # a zombie waiting for its reaper counts as gone
        return f.read().split(")")[-1].split()[0] != "Z"


def test_server_dies_with_the_process_that_started_it(manifest_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(manifest_path)], stdout=subprocess.PIPE,
                              text=True)
    server_pid = int(parent.stdout.readline())
    assert _alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 60
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(server_pid)
