"""Wall time and peak RSS of one command, run in its own process."""

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


@dataclass
class Measured:
    """What one run of a command cost, and how it ended."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def peak_rss_mib(self):
        return self.peak_rss_bytes / 2**20


def run_measured(cmd, env=None):
    """Runs cmd; returns its wall time and the peak RSS of the command itself.

    ru_maxrss seen from this (large, Python) process is no good, since
    Linux carries the high-water mark across exec and a child would report this process's RSS.
    GNU time forks from a small process and reports the exact figure; without it, VmHWM in /proc
    (which belongs to the exec'd image) is sampled every millisecond until exit. Output goes to
    temporary files, so a chatty child never blocks on a full pipe.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        if GNU_TIME:
            with tempfile.NamedTemporaryFile("r") as rss_file:
                t0 = time.perf_counter()
                p = subprocess.run(
                    [GNU_TIME, "-f", "%M", "-o", rss_file.name, *cmd],
                    stdout=out,
                    stderr=err,
                    env=env,
                )
                wall = time.perf_counter() - t0
                # On failure GNU time writes "Command exited with non-zero status N" first.
                words = rss_file.read().split()
                peak = int(words[-1]) * 1024 if words and words[-1].isdigit() else 0
                returncode = p.returncode
        else:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
            peak = 0
            status_file = f"/proc/{p.pid}/status"
            while p.poll() is None:
                try:
                    with open(status_file) as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                peak = max(peak, int(line.split()[1]) * 1024)
                except OSError:
                    pass
                time.sleep(0.001)
            wall = time.perf_counter() - t0
            returncode = p.returncode
        out.seek(0)
        err.seek(0)
        return Measured(wall, peak, returncode, out.read(), err.read())
