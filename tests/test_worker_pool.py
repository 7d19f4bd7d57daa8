"""Products shared among worker threads (raxcli/engine/worker_pool.py) equal the products
of one thread, whatever the number of workers and the weight type."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from quant import kernels
from quant.quantize import quantize
from quant.rows import thread_count
from raxcli.engine import worker_pool
from raxcli.engine.weights import Matrix


def matrix_of(qtype, rng, n_out=37, n_in=64):
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    raw = quantize(w, qtype) if qtype not in (T.F32,) else w.view(np.uint8).reshape(n_out, -1)
    return Matrix("w", raw.reshape(n_out, -1), qtype, n_out, n_in)


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.Q8_0], ids=lambda t: t.name)
@pytest.mark.parametrize("workers", [1, 2, 3, 64])
@pytest.mark.parametrize("n_tokens", [3, 20], ids=["matvec_tokens", "tiles"])
def test_shared_products_equal_one_threads_product(qtype, workers, n_tokens):
    rng = np.random.default_rng(workers)
    m = matrix_of(qtype, rng)
    x = rng.standard_normal((n_tokens, m.n_in)).astype(np.float32)
    want = kernels.matmul(m.raw, qtype, m.n_in, x)
    # BLAS may block a narrower product differently: equal up to the order of a dot's sums
    np.testing.assert_allclose(worker_pool.product(m, x, workers), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_shared_dense_products_equal_numpys(workers):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((9, 16)).astype(np.float32), rng.standard_normal((16, 7)).astype(np.float32)
    np.testing.assert_allclose(worker_pool.dense_product(x, w, workers), x @ w, rtol=1e-6, atol=1e-6)


def test_matmul_writes_into_a_column_slice_of_a_wider_array():
    rng = np.random.default_rng(4)
    m = matrix_of(T.Q8_0, rng, n_out=12)
    x = rng.standard_normal((20, m.n_in)).astype(np.float32)
    wide = np.full((20, 30), 7.0, np.float32)
    kernels.matmul(m.raw, T.Q8_0, m.n_in, x, out=wide[:, 5:17])
    np.testing.assert_allclose(wide[:, 5:17], kernels.matmul(m.raw, T.Q8_0, m.n_in, x), rtol=1e-5, atol=1e-5)
    assert (wide[:, :5] == 7).all() and (wide[:, 17:] == 7).all()


def test_an_error_in_a_worker_reaches_the_caller():
    def work(part):
        if part == 2:
            raise ValueError("part 2 failed")
    with pytest.raises(ValueError, match="part 2 failed"):
        worker_pool.run_parts(work, range(4), 2)


def test_workers_run_numba_on_one_thread_and_the_caller_keeps_its_count():
    import numba
    seen = []
    worker_pool.run_parts(lambda part: seen.append(thread_count()), range(4), 2)
    assert seen == [1, 1, 1, 1]
    assert thread_count() == numba.get_num_threads()
