"""Running every kernel once before the first answer, with a notice when that means compiling.

Numba compiles the kernels for this CPU on their first call and caches the result
(`cache=True`): the first run of rax on a machine takes ~15 s more, later ones load the cache
in about a second. `warm_up` runs a short prompt and one decode step on a scratch state, so
that the compiling happens here, visibly, not silently inside the first answer. A line on
stderr says so when Numba really compiles something (its "numba:compile" event, which a
cache hit does not fire): a slow warm-up for other reasons (a model file not yet in the page
cache) is not taken for compiling.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from numba.core import event

NOTICE = "rax: compiling kernels for this CPU (first run only; cached afterwards)..."


class _CompileNotice(event.Listener):
    """Writes NOTICE once, when the first compilation starts."""

    def __init__(self, stream: TextIO | None):
        super().__init__()
        self.stream, self.compiled = stream, False

    def on_start(self, ev) -> None:
        if not self.compiled and self.stream is not None:
            self.stream.write(NOTICE + "\n")
            self.stream.flush()
        self.compiled = True

    def on_end(self, ev) -> None:
        pass


def warm_up(model, stream: TextIO | None = sys.stderr) -> float:
    """Compile or load every kernel `model` uses; returns the seconds it took."""
    from .engine.deltanet import RECURRENT_TOKENS
    t0 = time.perf_counter()
    with event.install_listener("numba:compile", _CompileNotice(stream)):
        state = model.new_state()
        ids = [0] * (RECURRENT_TOKENS + 1)          # long enough for the prefill path
        model.forward(model.embed(ids), state)
        model.forward(model.embed(ids[:2]), state)  # the short-batch path
        model.decode(0, state)
    return time.perf_counter() - t0
