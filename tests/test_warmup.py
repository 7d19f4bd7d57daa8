"""The warm-up runs every kernel once and says "compiling" only when Numba compiles."""
import io
from pathlib import Path

from numba import njit
from numba.core import event

from raxcli.engine.text import TextModel
from raxcli.engine.weights import ModelWeights
from raxcli.warmup import NOTICE, _CompileNotice, warm_up

FIXTURE = Path(__file__).parent / "fixtures" / "gguf" / "tiny-vk2-Q8_0.gguf"


def test_a_second_warm_up_says_nothing():
    model = TextModel(ModelWeights(FIXTURE), activations="fine")
    warm_up(model, stream=io.StringIO())            # may compile (or load the cache)
    said = io.StringIO()
    warm_up(model, stream=said)
    assert said.getvalue() == ""


def test_the_notice_comes_once_when_numba_compiles():
    @njit   # not cached: compiled at the first call of each signature
    def plus_one(x):
        return x + 1

    said = io.StringIO()
    with event.install_listener("numba:compile", _CompileNotice(said)):
        plus_one(1)
        plus_one(1.5)
    assert said.getvalue() == NOTICE + "\n"
