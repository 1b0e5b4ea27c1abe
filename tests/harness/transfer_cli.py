"""Runs the `mltask-transfer` command line as a step pod would, for the tests: exit, output, RSS.

    run = run_transfer("download", env)   # env: exactly the pod's environment
    run.returncode, run.stdout, run.last_line, run.max_rss_mib
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: The Secret name the tests' step pods say their credentials came from.
SECRET_NAME = "s3-credentials"


@dataclass(repr=False)
class Run:
    """A finished `mltask-transfer` run: exit code, output, the child's peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    max_rss_mib: float

    @property
    def last_line(self) -> str:
        """The last line of stderr: what the operator shows as the task's message."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    def __repr__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


#: Runs `python -m mltask_operator.transfer COMMAND` and, at its exit, writes its own peak RSS
#: (VmHWM, KiB) to the file named last. wait4's ru_maxrss would not do: Linux carries the
#: parent's high-water mark at fork over the exec, so a 200 MiB pytest shows as a 200 MiB step.
_LAUNCHER = """
import atexit, runpy, sys
hwm = sys.argv.pop()
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(hwm, "w") as out:
        out.write(kib)
atexit.register(peak)
runpy.run_module("mltask_operator.transfer", run_name="__main__", alter_sys=True)
"""


def run_transfer(command: str, env: dict[str, str], timeout: float = 120) -> Run:
    """`python -m mltask_operator.transfer COMMAND` with exactly `env` (its MLTASK_TEST_TMP, a
    folder for the output files), with the program's own peak RSS."""
    out_path = Path(env["MLTASK_TEST_TMP"]) / f"transfer-{time.monotonic_ns()}"
    hwm = Path(f"{out_path}.hwm")
    with open(f"{out_path}.out", "w+") as out, open(f"{out_path}.err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, command, str(hwm)],
                                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # killed before its exit handler ran: the kernel's figure, an upper bound
        kib = int(hwm.read_text()) if hwm.exists() else usage.ru_maxrss
        return Run(proc.returncode, out.read(), err.read(), kib / 1024)


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes); hidden staging folders included, so a
    leftover would show."""
    found = {}
    for d, _, names in os.walk(root):
        for name in names:
            path = Path(d, name)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found
