"""The ggml tensor types rax reads, and the byte size of their rows.

A quantized row of n values is n / block_size blocks of type_size bytes each
(`gguf.GGML_QUANT_SIZES`); GGUF stores a 2-D weight row by row, so the raw bytes of a
matrix are a (n_rows, row_nbytes) uint8 array.
"""
from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

T = GGMLQuantizationType

SUPPORTED: frozenset[GGMLQuantizationType] = frozenset({
    T.F32, T.F16, T.BF16,
    T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1,
    T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
})


class UnsupportedTensorType(ValueError):
    """A ggml type rax has no kernels for (the i-quants, TQ*, MXFP4, integer types ...)."""

    def __init__(self, qtype):
        name = getattr(qtype, "name", str(qtype))
        supported = ", ".join(t.name for t in sorted(SUPPORTED, key=int))
        super().__init__(f"ggml type {name} is not supported by rax (supported: {supported})")
        self.qtype = qtype


def as_type(qtype) -> GGMLQuantizationType:
    """The GGMLQuantizationType of `qtype` (a member, its int value or its name)."""
    try:
        if isinstance(qtype, str):
            return T[qtype.upper()]
        return T(qtype)
    except (KeyError, ValueError):
        raise UnsupportedTensorType(qtype) from None


def is_supported(qtype) -> bool:
    try:
        return as_type(qtype) in SUPPORTED
    except UnsupportedTensorType:
        return False


def check_supported(qtype) -> GGMLQuantizationType:
    qtype = as_type(qtype)
    if qtype not in SUPPORTED:
        raise UnsupportedTensorType(qtype)
    return qtype


def block_size(qtype) -> int:
    """Values per block (1 for the float types)."""
    return GGML_QUANT_SIZES[check_supported(qtype)][0]


def type_size(qtype) -> int:
    """Bytes per block."""
    return GGML_QUANT_SIZES[check_supported(qtype)][1]


def row_nbytes(qtype, n_cols: int) -> int:
    """Bytes of one row of n_cols values; n_cols must be a whole number of blocks."""
    qtype = check_supported(qtype)
    block, size = GGML_QUANT_SIZES[qtype]
    if n_cols <= 0 or n_cols % block:
        raise ValueError(f"a {qtype.name} row holds whole blocks of {block} values, not {n_cols}")
    return n_cols // block * size
