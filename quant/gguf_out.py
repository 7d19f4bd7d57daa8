"""Writing a GGUF file tensor by tensor, into a temporary file renamed only when complete.

Layout (GGUF v3, little-endian): magic, version, tensor count, key-value count; the
key-values; the tensor infos (name, dims in ggml order, type, offset in the data section);
padding to the alignment; then each tensor's bytes, each starting at a multiple of the
alignment. Every tensor info is known before any data is written, so the data can stream:
`write_gguf` asks each tensor for its rows a chunk at a time and never holds a whole tensor.
"""
from __future__ import annotations

import os
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from .page_cache import release_page_cache
from .quantize import quantize

V = GGUFValueType
ALIGNMENT = 32
CHUNK_BYTES = 16 << 20          # float32 bytes of the rows produced and quantized at once
_SCALARS = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I",
            V.INT32: "<i", V.FLOAT32: "<f", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d",
            V.BOOL: "<?"}


@dataclass(frozen=True)
class KV:
    """One metadata entry with its GGUF value type (and element type for arrays)."""
    key: str
    value: Any
    type: GGUFValueType
    sub_type: GGUFValueType | None = None


class Metadata:
    """Key-value entries in writing order; setting a key twice replaces it in place."""

    def __init__(self) -> None:
        self._entries: dict[str, KV] = {}

    def add(self, key: str, value: Any, vtype: GGUFValueType, sub_type: GGUFValueType | None = None) -> None:
        self._entries[key] = KV(key, value, vtype, sub_type)

    def string(self, key: str, value: str) -> None:
        self.add(key, value, V.STRING)

    def u32(self, key: str, value: int) -> None:
        self.add(key, int(value), V.UINT32)

    def f32(self, key: str, value: float) -> None:
        self.add(key, float(value), V.FLOAT32)

    def bool(self, key: str, value: bool) -> None:
        self.add(key, bool(value), V.BOOL)

    def array(self, key: str, values, sub_type: GGUFValueType) -> None:
        self.add(key, list(values), V.ARRAY, sub_type)

    def remove(self, key: str) -> None:
        self._entries.pop(key, None)

    def __getitem__(self, key: str) -> Any:
        return self._entries[key].value

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[KV]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class OutputTensor:
    """A tensor to write: its GGUF name, NumPy-order shape, type, and where its rows come from.

    Either `values(start, stop)` gives float32 rows [stop - start, shape[-1]] of the tensor
    seen as 2-D (quantized here), or `raw(start, stop)` gives rows already in `qtype`."""
    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    values: Callable[[int, int], np.ndarray] | None = None
    raw: Callable[[int, int], np.ndarray] | None = None
    source_bytes: int = 0                   # bytes read from the source, for progress
    done: Callable[[], None] = field(default=lambda: None)   # called once written

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block * size


def _pack_string(s: str) -> bytes:
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _pack_value(value: Any, vtype: GGUFValueType, sub_type: GGUFValueType | None) -> bytes:
    if vtype == V.STRING:
        return _pack_string(value)
    if vtype == V.ARRAY:
        head = struct.pack("<IQ", int(sub_type), len(value))
        if sub_type == V.STRING:
            return head + b"".join(_pack_string(s) for s in value)
        if sub_type == V.ARRAY:
            raise ValueError("nested arrays are not written")
        return head + np.asarray(value, dtype=_SCALARS[sub_type]).tobytes()
    return struct.pack(_SCALARS[vtype], value)


def encode_header(metadata: Metadata, tensors: list[OutputTensor]) -> bytes:
    """Everything before the data section, padded to the alignment."""
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(metadata))]
    for kv in metadata:
        parts += [_pack_string(kv.key), struct.pack("<I", int(kv.type)), _pack_value(kv.value, kv.type, kv.sub_type)]
    offset = 0
    for t in tensors:
        dims = list(reversed(t.shape))
        parts += [_pack_string(t.name), struct.pack("<I", len(dims)), struct.pack(f"<{len(dims)}Q", *dims),
                  struct.pack("<IQ", int(t.qtype), offset)]
        offset += _padded(t.n_bytes)
    header = b"".join(parts)
    return header + bytes(_padded(len(header)) - len(header))


def _padded(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed to it when the block completes; removed if not.
    A large file is flushed and its pages dropped from the page cache before the rename
    (page_cache.py: the first load then maps it in large pages)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        release_page_cache(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp's 0600 → what open() would have made
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_gguf(path: Path, metadata: Metadata, tensors: list[OutputTensor],
               progress: Callable[[int], None] = lambda n: None) -> None:
    """Write the file (atomically), quantizing each tensor's rows a chunk at a time.

    progress(n) is called with the source bytes of each tensor once it is written."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(encode_header(metadata, tensors))
        for t in tensors:
            written = _write_tensor(f, t)
            if written != t.n_bytes:
                raise RuntimeError(f"{t.name}: wrote {written} bytes, expected {t.n_bytes}")
            f.write(bytes(_padded(written) - written))
            t.done()
            progress(t.source_bytes)


def _write_tensor(f, t: OutputTensor) -> int:
    n_cols = t.shape[-1] if t.shape else 1
    step = max(1, CHUNK_BYTES // (4 * n_cols))
    written = 0
    for start in range(0, t.n_rows, step):
        stop = min(t.n_rows, start + step)
        if t.raw is not None:
            chunk = np.ascontiguousarray(t.raw(start, stop))
        else:
            rows = t.values(start, stop)
            if rows.shape != (stop - start, n_cols):
                raise RuntimeError(f"{t.name}: rows {start}:{stop} came out as {rows.shape}")
            chunk = quantize(rows, t.qtype)
        f.write(memoryview(chunk).cast("B"))
        written += chunk.nbytes
    return written
