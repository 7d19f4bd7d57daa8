"""Running every kernel once before the first answer, with a notice when that means compiling.

Numba compiles the kernels for this CPU on their first call and caches the result
(`cache=True`): the first run of rax on a machine takes ~15 s more, later ones load the cache
in about a second. `warm_up` runs a short prompt and one decode step on a scratch state, so
that the compiling happens here, visibly, not silently inside the first answer; when it takes
longer than NOTICE_AFTER seconds (a cold cache) a line on stderr says what is going on.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

NOTICE_AFTER = 1.0


def warm_up(model, stream: TextIO | None = sys.stderr) -> float:
    """Compile or load every kernel `model` uses; returns the seconds it took."""
    from .engine.deltanet import RECURRENT_TOKENS
    t0 = time.perf_counter()
    done = threading.Event()

    def notice():
        if not done.wait(NOTICE_AFTER) and stream is not None:
            stream.write("rax: compiling kernels for this CPU (first run only; cached afterwards)...\n")
            stream.flush()

    watcher = threading.Thread(target=notice, daemon=True)
    watcher.start()
    try:
        state = model.new_state()
        ids = [0] * (RECURRENT_TOKENS + 1)          # long enough for the prefill path
        model.forward(model.embed(ids), state)
        model.forward(model.embed(ids[:2]), state)  # the short-batch path
        model.decode(0, state)
    finally:
        done.set()
        watcher.join()
    return time.perf_counter() - t0
