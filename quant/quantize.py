"""float32 → ggml blocks: the tensor types `rax quantize` writes.

`quantize(values, qtype)` turns float32 rows [n_rows, n_cols] into the row bytes GGUF stores
(uint8 [n_rows, row_nbytes]). Every type follows llama.cpp's reference rounding, so the bytes
are the ones llama.cpp itself writes:

- F32, F16, BF16: NumPy casts (F16 and BF16 round to nearest even, as ggml and gguf-py do);
- Q8_0, Q4_0, Q5_0: gguf-py's `quants.quantize` (= ggml's quantize_row_*_ref), here in Numba;
- Q4_K, Q6_K: ggml's quantize_row_q4_K_ref / q6_K_ref (`quantize_k.py`), which is what
  llama-quantize runs when it has no importance matrix.

The kernels do plain float32 arithmetic with no fast-math: no fused multiply-adds and no
reordered sums, as ggml-base is compiled. That is what makes the bytes match.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .errors import ConversionError
from .formats import row_nbytes

T = GGMLQuantizationType
# what quantize() writes (Q5_0 and Q8_0 are also llama-quantize's fallbacks for Q4_K / Q6_K
# rows that are not whole 256-value super-blocks)
WRITABLE = frozenset({T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q5_0, T.Q4_K, T.Q6_K})
ROWS_PER_TASK = 16
QUANT = dict(cache=True, parallel=True)      # exact float32 arithmetic: no fastmath

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)


class QuantizeError(ConversionError):
    """A tensor that cannot be written in the requested type (type or row length)."""


# -- float16 rounding of block scales ------------------------------------------------------------
@intrinsic
def f16_bits(typingctx, x):
    """The IEEE half nearest to float32 x (ties to even), as uint16 bits: LLVM's fptrunc."""
    sig = types.uint16(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return sig, codegen


@intrinsic
def f16_round(typingctx, x):
    """x rounded to the nearest half and widened back: GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(x))."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), ir.FloatType())
    return sig, codegen


@njit(inline="always")
def store_f16(out, r, o, x):
    """Write x as a little-endian half at out[r, o:o+2]; returns the value stored (as float32)."""
    bits = f16_bits(np.float32(x))
    out[r, o] = np.uint8(bits & 0xFF)
    out[r, o + 1] = np.uint8(bits >> 8)
    return f16_round(np.float32(x))


@njit(inline="always")
def round_half_away(x):
    """C's roundf (halves away from zero), exactly, for float32 x."""
    a = abs(x)
    whole = np.floor(a)
    if a - whole >= np.float32(0.5):       # a - floor(a) is exact in float32
        whole += _F1
    return -whole if x < 0 else whole


@njit(inline="always")
def n_tasks(n_rows):
    return (n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK


# -- the 32-value formats -------------------------------------------------------------------------
@njit(**QUANT)
def quantize_q8_0(x, out):
    """Q8_0 block (34 bytes): d = max|x| / 127 as f16, then 32 int8 round(x / d)."""
    n_rows, n_cols = x.shape
    for task in prange(n_tasks(n_rows)):
        for r in range(task * ROWS_PER_TASK, min(n_rows, (task + 1) * ROWS_PER_TASK)):
            for b in range(n_cols // 32):
                amax = _F0
                for j in range(32):
                    amax = max(amax, abs(x[r, 32 * b + j]))
                d = amax / np.float32(127.0)
                inv = _F1 / d if d != _F0 else _F0
                o = 34 * b
                store_f16(out, r, o, d)
                for j in range(32):
                    q = np.int32(round_half_away(x[r, 32 * b + j] * inv))
                    out[r, o + 2 + j] = np.uint8(q & 0xFF)


@njit(inline="always")
def _signed_max(x, r, start):
    """The value of largest magnitude among x[r, start:start+32] (the first one on ties)."""
    amax = _F0
    vmax = _F0
    for j in range(32):
        v = x[r, start + j]
        if abs(v) > amax:
            amax = abs(v)
            vmax = v
    return vmax


@njit(**QUANT)
def quantize_q4_0(x, out):
    """Q4_0 block (18 bytes): d = max / -8 as f16, codes min(15, trunc(x / d + 8.5)),
    value j in the low nibble of byte j and value j + 16 in its high nibble."""
    n_rows, n_cols = x.shape
    for task in prange(n_tasks(n_rows)):
        for r in range(task * ROWS_PER_TASK, min(n_rows, (task + 1) * ROWS_PER_TASK)):
            for b in range(n_cols // 32):
                d = _signed_max(x, r, 32 * b) / np.float32(-8.0)
                inv = _F1 / d if d != _F0 else _F0
                o = 18 * b
                store_f16(out, r, o, d)
                for j in range(16):
                    lo = min(15, np.int32(x[r, 32 * b + j] * inv + np.float32(8.5)))
                    hi = min(15, np.int32(x[r, 32 * b + j + 16] * inv + np.float32(8.5)))
                    out[r, o + 2 + j] = np.uint8(lo | (hi << 4))


@njit(**QUANT)
def quantize_q5_0(x, out):
    """Q5_0 block (22 bytes): d = max / -16 as f16, 32-bit qh of the codes' fifth bits,
    then the low nibbles packed as in Q4_0; codes min(31, trunc(x / d + 16.5))."""
    n_rows, n_cols = x.shape
    for task in prange(n_tasks(n_rows)):
        for r in range(task * ROWS_PER_TASK, min(n_rows, (task + 1) * ROWS_PER_TASK)):
            for b in range(n_cols // 32):
                d = _signed_max(x, r, 32 * b) / np.float32(-16.0)
                inv = _F1 / d if d != _F0 else _F0
                o = 22 * b
                store_f16(out, r, o, d)
                qh = np.uint32(0)
                for j in range(16):
                    lo = min(31, np.int32(x[r, 32 * b + j] * inv + np.float32(16.5)))
                    hi = min(31, np.int32(x[r, 32 * b + j + 16] * inv + np.float32(16.5)))
                    out[r, o + 6 + j] = np.uint8((lo & 0x0F) | ((hi & 0x0F) << 4))
                    qh |= np.uint32((lo >> 4) & 1) << np.uint32(j)
                    qh |= np.uint32((hi >> 4) & 1) << np.uint32(j + 16)
                for k in range(4):
                    out[r, o + 2 + k] = np.uint8((qh >> np.uint32(8 * k)) & np.uint32(0xFF))


# -- bfloat16 ------------------------------------------------------------------------------------
@njit(**QUANT)
def quantize_bf16(bits, out):
    """ggml_compute_fp32_to_bf16 on float32 bits: NaNs made quiet, the rest rounded to nearest even."""
    n_rows, n_cols = bits.shape
    for r in prange(n_rows):
        for j in range(n_cols):
            b = np.uint32(bits[r, j])
            if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                out[r, j] = np.uint16((b >> np.uint32(16)) | np.uint32(64))
            else:
                rounded = (np.uint64(b) + np.uint64(0x7FFF) + np.uint64((b >> np.uint32(16)) & np.uint32(1))) >> np.uint64(16)
                out[r, j] = np.uint16(rounded)


# -- dispatch ------------------------------------------------------------------------------------
def _to_bf16(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.uint16)
    if x.size:
        quantize_bf16(x.view(np.uint32), out)
    return out


def _kernel(qtype):
    from . import quantize_k          # the k-quants compile only when asked for
    return {T.Q8_0: quantize_q8_0, T.Q4_0: quantize_q4_0, T.Q5_0: quantize_q5_0,
            T.Q4_K: quantize_k.quantize_q4_k, T.Q6_K: quantize_k.quantize_q6_k}[qtype]


def can_quantize(qtype, n_cols: int) -> bool:
    """Whether rows of n_cols values can be written as qtype (whole blocks)."""
    try:
        row_nbytes(qtype, n_cols)
    except ValueError:
        return False
    return T(qtype) in WRITABLE


def quantize(values: np.ndarray, qtype) -> np.ndarray:
    """uint8 [n_rows, row_nbytes(qtype, n_cols)]: float32 rows [n_rows, n_cols] in qtype."""
    qtype = T(qtype)
    if qtype not in WRITABLE:
        raise QuantizeError(f"rax cannot write {qtype.name} tensors "
                            f"(it writes {', '.join(t.name for t in sorted(WRITABLE, key=int))})")
    x = np.ascontiguousarray(values, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"quantize takes 2-D rows, got shape {x.shape}")
    n_rows, n_cols = x.shape
    if not can_quantize(qtype, n_cols):
        raise QuantizeError(f"rows of {n_cols} values are not whole {qtype.name} blocks")
    if qtype == T.F32:
        return x.view(np.uint8)
    if qtype == T.F16:
        return x.astype(np.float16).view(np.uint8)
    if qtype == T.BF16:
        return _to_bf16(x).view(np.uint8)
    out = np.zeros((n_rows, row_nbytes(qtype, n_cols)), np.uint8)
    if n_rows:
        _kernel(qtype)(x, out)
    return out
