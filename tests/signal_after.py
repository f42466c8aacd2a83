"""Run the esrerank CLI and signal it at an exact point of its own progress: right after the N-th call of one
function returns (say the one that makes a chunk durable), the process sends itself SIGKILL (killed as by
`kill -9`: no handler, no cleanup) or SIGSTOP (held still until the test sends SIGCONT). A test that kills
or pauses a job this way knows what was on disk at that moment and cannot race the job to its end: the job
never gets past that point on its own.

    python tests/signal_after.py KILL|STOP MODULE:FUNCTION N esrerank-arguments...
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from pathlib import Path

# run as a script, Python puts tests/ first on the path, where tests/rerank/ would shadow the rerank package
sys.path[0] = str(Path(__file__).resolve().parents[1])


def main() -> None:
    name, target, count, *arguments = sys.argv[1:]
    chosen = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}[name]
    module_name, function_name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, function_name)
    calls, lock = 0, threading.Lock()  # worker threads may call it at once

    def counted(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        with lock:
            calls += 1
            if calls == int(count):
                os.kill(os.getpid(), chosen)
        return result

    setattr(module, function_name, counted)
    from pipelines.cli import main as esrerank

    sys.exit(esrerank(arguments))


if __name__ == "__main__":
    main()
