"""Start a command as the processes of one gloo process group on this machine (for the distributed tests)."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time


def launch(command: list[str], world: int = 2, timeout: float = 300) -> list[str]:
    """Run ``command`` as ``world`` processes (RANK, LOCAL_RANK, WORLD_SIZE set); return their logs, raise on failure.

    The command joins its process group through a file:// rendezvous, so nothing listens on a TCP port;
    GLOO_SOCKET_IFNAME=lo keeps gloo's own connections on 127.0.0.1. When one process fails the others
    (which would wait for it forever) are stopped at once.
    """
    env = {**os.environ, "WORLD_SIZE": str(world), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(world)]
    procs = [
        subprocess.Popen(command, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                         stdout=logs[rank], stderr=subprocess.STDOUT, text=True)
        for rank in range(world)
    ]
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while any(proc.poll() is None for proc in procs):
            if any(proc.poll() for proc in procs):
                failed = "a process failed"
                break
            if time.monotonic() > deadline:
                failed = f"timed out after {timeout:g} s"
                break
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    if failed or any(proc.returncode for proc in procs):
        raise AssertionError(f"{' '.join(command)}: {failed or 'a process failed'}\n" + "\n".join(
            f"--- rank {rank} (exit {proc.returncode})\n{text[-4000:]}"
            for rank, (proc, text) in enumerate(zip(procs, texts))
        ))
    return texts
