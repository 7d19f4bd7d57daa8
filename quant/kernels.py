"""Public kernels on quantized weights: dequantize, matvec (decode), matmul (prefill).

A weight W[n_rows, n_cols] is given as `raw`, its bytes as GGUF stores them: a uint8 array
of shape (n_rows, row_nbytes(qtype, n_cols)), usually a zero-copy view of a memory map.
Nothing here copies or dequantizes a whole matrix unless asked to (`dequantize`): `matvec`
decodes each block in registers, `matmul` dequantizes bounded tiles of rows for BLAS.

Dispatch is plain Python: one table maps a ggml type to its Numba kernels (`legacy.py`,
`kquants.py`, `floats.py`); the kernels are specialised per type.
"""
from __future__ import annotations

import threading

from dataclasses import dataclass
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType

from . import floats, gemm, gemv, kquants, legacy
from .activations import Int8Activations
from .gemm import Int16Tokens
from .formats import check_supported, row_nbytes
from .rows import thread_count

T = GGMLQuantizationType
TILE_BYTES = 8 << 20           # matmul: float32 bytes of one dequantized tile of rows
# matmul: up to this many tokens, one matvec per token (each reads W once at decode speed)
# beats writing and re-reading dequantized float32 tiles (measured crossover ~10 on Q4_K).
MATVEC_TOKENS = 8
ACTIVATION_BLOCK = 32          # int8 activations: one float scale per 32 values


# -- float32 rows: NumPy does everything ---------------------------------------------------------
def _dequant_f32(raw, row_ids, out):
    np.take(raw.view(np.float32), row_ids, axis=0, out=out)


def _matvec_f32(raw, x, xsum, out):
    np.dot(raw.view(np.float32), x, out=out)


@dataclass(frozen=True)
class _Kernels:
    dequant: Callable               # (raw, row_ids, out)
    matvec: Callable                # (raw, x, xsum, out)
    sum_group: int = 32             # xsum = sums of x over runs of this many values
    # gemv.py: (base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads)
    matvec_q8: Callable | None = None
    act_block: int = 32             # the int8 kernel's activations: one scale per this many values


_KERNELS: dict[GGMLQuantizationType, _Kernels] = {
    T.F32: _Kernels(_dequant_f32, _matvec_f32, 0),
    T.F16: _Kernels(floats.dequant_f16, floats.matvec_f16, 0),
    T.BF16: _Kernels(floats.dequant_bf16, floats.matvec_bf16, 0),
    T.Q8_0: _Kernels(legacy.dequant_q8_0, legacy.matvec_q8_0, 32, gemv.gemv_q8_0),
    T.Q4_0: _Kernels(legacy.dequant_q4_0, legacy.matvec_q4_0, 32, gemv.gemv_q4_0),
    T.Q4_1: _Kernels(legacy.dequant_q4_1, legacy.matvec_q4_1, 32),
    T.Q5_0: _Kernels(legacy.dequant_q5_0, legacy.matvec_q5_0, 32),
    T.Q5_1: _Kernels(legacy.dequant_q5_1, legacy.matvec_q5_1, 32),
    T.Q2_K: _Kernels(kquants.dequant_q2_k, kquants.matvec_q2_k, 16),
    T.Q3_K: _Kernels(kquants.dequant_q3_k, kquants.matvec_q3_k, 16),
    T.Q4_K: _Kernels(kquants.dequant_q4_k, kquants.matvec_q4_k, 32, gemv.gemv_q4_k, 256),
    T.Q5_K: _Kernels(kquants.dequant_q5_k, kquants.matvec_q5_k, 32, gemv.gemv_q5_k, 256),
    T.Q6_K: _Kernels(kquants.dequant_q6_k, kquants.matvec_q6_k, 16, gemv.gemv_q6_k, 256),
}
_NO_SUMS = np.zeros(1, np.float32)


def has_int8_kernel(qtype) -> bool:
    """Whether matvec(..., int8_activations=True) has a kernel of its own for this type."""
    return _KERNELS[check_supported(qtype)].matvec_q8 is not None


# -- argument checks ---------------------------------------------------------------------------
def _weights(raw, qtype, n_cols):
    """(kernels, raw as a read-only C-contiguous uint8 view) after checking the shape.

    Every array reaches the kernels read-only, so each kernel compiles once whether the
    bytes come from a memory map or from a writable test array.
    """
    qtype = check_supported(qtype)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2:
        raise TypeError(f"raw must be a 2-D uint8 array of row bytes, got {type(raw).__name__} "
                        f"{getattr(raw, 'dtype', '')}{getattr(raw, 'shape', '')}")
    expected = row_nbytes(qtype, n_cols)
    if raw.shape[1] != expected:
        raise ValueError(f"{qtype.name} rows of {n_cols} values take {expected} bytes, raw has {raw.shape[1]}")
    if not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw)       # only a strided view of rows is copied
    view = raw.view(np.ndarray)
    view.flags.writeable = False
    return _KERNELS[qtype], view


def _vector(x, n, name):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {x.shape}")
    return x


def _row_sums(x, group):
    if group == 0:
        return _NO_SUMS
    return x.reshape(-1, group).sum(axis=1, dtype=np.float32)


# -- public API --------------------------------------------------------------------------------
def dequantize(raw: np.ndarray, qtype, n_cols: int) -> np.ndarray:
    """float32[n_rows, n_cols] of all rows of raw (any row slice raw[a:b] works too)."""
    kernels, raw = _weights(raw, qtype, n_cols)
    out = np.empty((raw.shape[0], n_cols), np.float32)
    if raw.shape[0]:
        kernels.dequant(raw, np.arange(raw.shape[0], dtype=np.int64), out)
    return out


def dequantize_rows(raw: np.ndarray, qtype, n_cols: int, row_ids) -> np.ndarray:
    """float32[len(row_ids), n_cols]: the rows row_ids of raw (embedding lookup)."""
    kernels, raw = _weights(raw, qtype, n_cols)
    row_ids = np.ascontiguousarray(row_ids, dtype=np.int64).reshape(-1)
    if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= raw.shape[0]):
        raise IndexError(f"row ids must lie in [0, {raw.shape[0]}), got {row_ids.min()}..{row_ids.max()}")
    out = np.empty((row_ids.size, n_cols), np.float32)
    if row_ids.size:
        kernels.dequant(raw, row_ids, out)
    return out


def _int8_product(kernels: _Kernels, base: np.ndarray, starts: np.ndarray, rows: np.ndarray,
                  acts: Int8Activations, out: np.ndarray) -> None:
    """out [T, sum(rows)] = the matrices at base[starts[m]:] (rows[m] rows each) times the
    activations, their outputs side by side (gemv.py)."""
    if acts.block != kernels.act_block:
        raise ValueError(f"this type's int8 kernel takes activations in blocks of {kernels.act_block}, not {acts.block}")
    scales = acts.scales() if acts.block == 32 else acts.xd    # the k-quant kernels apply 1/254 themselves
    kernels.matvec_q8(base, starts, rows, acts.xq, acts.xq_lo, scales, acts.sum16, acts.sum32, acts.code_sums,
                      out, thread_count())


def _single(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, starts, rows) of one matrix given as its own bytes."""
    return raw.reshape(-1), np.zeros(1, np.int64), np.array([raw.shape[0]], np.int64)


def _buffer_of(raw: np.ndarray) -> tuple[np.ndarray, int]:
    """(the whole buffer raw's bytes lie in, as read-only flat bytes; raw's offset in it).

    For the engine's weights that buffer is the file's memory map, so matrices of one file
    can go through one kernel call (`BoundGroup`); any other raw is its own buffer."""
    root = raw
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root is not raw and root.flags.c_contiguous:
        flat = root.reshape(-1).view(np.uint8).view(np.ndarray)
        start = raw.ctypes.data - flat.ctypes.data
        if 0 <= start and start + raw.nbytes <= flat.size:
            flat.flags.writeable = False
            return flat, start
    return raw.reshape(-1), 0


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x ~ xd[b] * xq[32b : 32b+32]: int8 values in [-127, 127] and one float32 scale per 32.

    Like llama.cpp's q8_0 activations, with the scale kept in float32 (llama.cpp rounds it to
    float16) and one scale per 32 values for the k-quants too (llama.cpp's q8_K uses 256).
    """
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(1, -1)
    acts = Int8Activations.quantize(x)
    return acts.xq[0], acts.xd[0]


def matvec(raw: np.ndarray, qtype, n_cols: int, x: np.ndarray, out: np.ndarray | None = None,
           int8_activations: bool = False) -> np.ndarray:
    """y = W @ x as float32[n_rows], decoding W's blocks on the fly in parallel over rows.

    int8_activations=True quantizes x to int8 per 32 values and sums weight x activation
    products in int32, as llama.cpp does (faster, about 0.5% less accurate); types without
    such a kernel (`has_int8_kernel`) take the exact float path.
    """
    kernels, raw = _weights(raw, qtype, n_cols)
    x = _vector(x, n_cols, "x")
    n_rows = raw.shape[0]
    if out is None:
        out = np.empty(n_rows, np.float32)
    elif out.shape != (n_rows,) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous float32 array of shape ({n_rows},)")
    if n_rows == 0:
        return out
    if int8_activations and kernels.matvec_q8 is not None:
        _int8_product(kernels, *_single(raw), Int8Activations.quantize(x.reshape(1, -1), block=kernels.act_block),
                      out.reshape(1, -1))
    else:
        kernels.matvec(raw, x, _row_sums(x, kernels.sum_group), out)
    return out


def matmul(raw: np.ndarray, qtype, n_cols: int, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Y = X @ Wᵀ as float32[n_tokens, n_rows] (prefill), into `out` when given (any float32
    [n_tokens, n_rows] view, e.g. some columns of a wider array).

    Rows of W are dequantized a tile at a time (at most TILE_BYTES of float32, in parallel)
    and multiplied by BLAS straight into Y's columns. Up to MATVEC_TOKENS tokens take one
    exact-path `matvec` each instead.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != n_cols:
        raise ValueError(f"X must have shape (n_tokens, {n_cols}), got {X.shape}")
    kernels, raw = _weights(raw, qtype, n_cols)
    n_tokens, n_rows = X.shape[0], raw.shape[0]
    if out is None:
        out = np.empty((n_tokens, n_rows), np.float32)
    elif out.shape != (n_tokens, n_rows) or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape ({n_tokens}, {n_rows})")
    if kernels.dequant is _dequant_f32:
        return np.matmul(X, raw.view(np.float32).T, out=out)
    if n_tokens == 0 or n_rows == 0:
        return out
    if n_tokens <= MATVEC_TOKENS:
        row = np.empty(n_rows, np.float32)        # matvec writes contiguous rows; out may be strided
        for t in range(n_tokens):
            out[t] = matvec(raw, qtype, n_cols, X[t], out=row)
        return out
    tile_rows = max(1, min(n_rows, TILE_BYTES // (4 * n_cols)))
    tile = _scratch_tile(tile_rows * n_cols).reshape(tile_rows, n_cols)
    row_ids = np.arange(n_rows, dtype=np.int64)
    for start in range(0, n_rows, tile_rows):
        stop = min(n_rows, start + tile_rows)
        w = tile[:stop - start]
        kernels.dequant(raw, row_ids[start:stop], w)
        np.matmul(X, w.T, out=out[:, start:stop])
    return out


_SCRATCH = threading.local()


def _scratch_tile(n: int) -> np.ndarray:
    """A float32 buffer of n values reused by every `matmul` of this thread: a fresh one
    per call page-faulted its TILE_BYTES in each time (the vision tower: ~100 calls per
    picture, 0.2 s of faults)."""
    buf = getattr(_SCRATCH, "tile", None)
    if buf is None or buf.size < n:
        buf = _SCRATCH.tile = np.empty(max(n, TILE_BYTES // 4), np.float32)
    return buf[:n]


class BoundWeight:
    """One weight matrix checked once, for the engine's hot path: every product after that
    goes straight to its kernel (no shape checks, no dispatch, outputs written in place).

    Exact products (`matvec`, `matmul`) keep activations in float32; `matmul_int8` takes
    activations already quantized (`Int8Activations`, shared by every matrix that reads the
    same input) and falls back to the exact path for types without an int8 kernel.
    """

    __slots__ = ("raw", "qtype", "n_rows", "n_cols", "_kernels", "base", "start", "_starts", "_rows")

    def __init__(self, raw: np.ndarray, qtype, n_cols: int):
        self._kernels, self.raw = _weights(raw, qtype, n_cols)
        self.qtype, self.n_rows, self.n_cols = check_supported(qtype), raw.shape[0], n_cols
        self.base, self.start = _buffer_of(self.raw)
        self._starts, self._rows = np.array([self.start], np.int64), np.array([self.n_rows], np.int64)

    def shares_pass_with(self, other: "BoundWeight") -> bool:
        """Whether a `BoundGroup` can take both in one pass: one type, one width, one buffer."""
        same_buffer = self.base.ctypes.data == other.base.ctypes.data and self.base.size == other.base.size
        return self._kernels is other._kernels and self.n_cols == other.n_cols and same_buffer and self.has_int8

    @property
    def has_int8(self) -> bool:
        return self._kernels.matvec_q8 is not None

    @property
    def activation_block(self) -> int:
        """The block size of the activations `matmul_int8` takes (Int8Activations.block)."""
        return self._kernels.act_block

    def matvec(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x: contiguous float32 [n_cols]; out: float32 [n_rows]."""
        k = self._kernels
        k.matvec(self.raw, x, _row_sums(x, k.sum_group), out)
        return out

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X: contiguous float32 [T, n_cols] → [T, n_rows] (dequantized tiles and BLAS for long T)."""
        if X.shape[0] <= MATVEC_TOKENS and self._kernels.dequant is not _dequant_f32:
            if out is None:
                out = np.empty((X.shape[0], self.n_rows), np.float32)
            for t in range(X.shape[0]):
                self.matvec(X[t], out[t])
            return out
        return matmul(self.raw, self.qtype, self.n_cols, X, out)

    @property
    def has_int16(self) -> bool:
        return self.qtype.name in gemm.FORMATS

    def matmul_int16(self, acts: Int16Tokens, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X @ Wᵀ for many tokens (prefill) with int16 activations (`Int16Tokens`, quant/gemm.py):
        about twice the speed of dequantized tiles and BLAS; types without it take that path."""
        if not self.has_int16:
            return self.matmul(x, out)
        if out is None:
            out = np.empty((acts.n_tokens, self.n_rows), np.float32)
        gemm.gemm16(self.raw, gemm.FORMATS[self.qtype.name], acts.x16, acts.xd, acts.xsum32, acts.n_tokens, out,
                    thread_count())
        return out

    def matmul_int8(self, acts: Int8Activations, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """W @ x_t for the T tokens of `acts` (the int8 form of x [T, n_cols]) → out [T, n_rows]."""
        k = self._kernels
        if k.matvec_q8 is None:
            return self.matmul(x, out)
        if out is None:
            out = np.empty((acts.n_tokens, self.n_rows), np.float32)
        _int8_product(k, self.base, self._starts, self._rows, acts, out)
        return out


class BoundGroup:
    """Several matrices that read the same input, times int8 activations in one parallel pass
    (gemv.py): one kernel call and one share of rows per thread instead of one per matrix.
    They must all share a pass (`BoundWeight.shares_pass_with`): one type, width and buffer."""

    __slots__ = ("weights", "n_rows", "_kernels", "_base", "_starts", "_rows")

    def __init__(self, weights: list[BoundWeight]):
        first = weights[0]
        if not all(first.shares_pass_with(w) for w in weights):
            raise ValueError("a BoundGroup takes matrices of one type, width and buffer")
        self.weights, self._kernels, self._base = list(weights), first._kernels, first.base
        self._starts = np.array([w.start for w in weights], np.int64)
        self._rows = np.array([w.n_rows for w in weights], np.int64)
        self.n_rows = int(self._rows.sum())

    @property
    def activation_block(self) -> int:
        return self._kernels.act_block

    def matmul_int8(self, acts: Int8Activations, out: np.ndarray) -> np.ndarray:
        """out [T, n_rows]: each matrix's outputs in turn, columns side by side (C-contiguous)."""
        _int8_product(self._kernels, self._base, self._starts, self._rows, acts, out)
        return out
