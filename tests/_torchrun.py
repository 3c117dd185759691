"""Run `nft run` as one process or under torchrun (gloo, this machine) from a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def nft_command(
    config: Path, out: Path, ranks: int, overrides: list[str], extra: tuple[str, ...] = ()
) -> list[str]:
    """`nft run` as one process, or under torchrun with `ranks` processes on this machine."""
    nft = ["-m", "nft_core.cli", "run", str(config), "--out", str(out)]
    for override in overrides:
        nft += ["--set", override]
    nft += list(extra)
    if ranks == 1:
        return [sys.executable, *nft]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return [sys.executable, *launcher, *nft]


def start(args: list[str]) -> subprocess.Popen:
    """Start `args` in a session of its own (so a test can kill torchrun and its ranks at once)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for `process`; its output, after asserting it succeeded."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def kill_job(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and every rank it started (each rank runs in a session of its own, so killing
    torchrun's process group would leave them running), and wait until they are gone."""
    ranks = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    for pid in [*ranks, str(process.pid)]:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)
    deadline = time.time() + 60  # the ranks are not our children: poll until they are gone
    for pid in ranks:
        while _alive(int(pid)) and time.time() < deadline:
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = f"/proc/{pid}/stat"  # Linux: a zombie is dead, it only waits for its parent to reap it
    return not os.path.exists(stat) or open(stat).read().split()[2] != "Z"
