"""Peak memory of this process."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb() -> float:
    """The process's high-water resident set size (VmHWM). Unlike getrusage's ru_maxrss, which Linux
    carries across exec from the parent, VmHWM belongs to this process image alone."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
