"""A Hugging Face safetensors checkpoint, memory-mapped, one tensor (or a few rows) at a time.

A checkpoint folder holds `model.safetensors`, or shards listed by
`model.safetensors.index.json` (`weight_map`: tensor name → file). Each file is an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
raw little-endian data. Tensors come out in the order llama.cpp's converter visits them:
files in sorted order, names sorted within each file.

Reading never copies a whole checkpoint: `rows()` widens just the rows asked for to float32
(bfloat16 by a 16-bit shift, no float64 detour), and `release()` drops a tensor's pages from
this process once it is written, so the resident set stays near one tensor's worth.
"""
from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError

INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}
_PAGE = mmap.PAGESIZE


class CheckpointError(ConversionError):
    """The checkpoint's files are missing, truncated or not safetensors."""


@dataclass(frozen=True)
class StoredTensor:
    name: str
    dtype: str                  # safetensors dtype: F32, F16, BF16, F64
    shape: tuple[int, ...]
    file: Path
    offset: int                 # absolute byte offset of the data in `file`
    n_bytes: int

    @property
    def n_rows(self) -> int:
        """Rows of the tensor seen as 2-D [prod(shape[:-1]), shape[-1]] (1-D: one row)."""
        return int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1

    @property
    def n_cols(self) -> int:
        return self.shape[-1] if self.shape else 1


def shard_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files, sorted; an index naming a missing file is an error."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: missing shard {missing[0]} (listed in {INDEX_FILE}"
                                  + (f", {len(missing) - 1} more missing)" if len(missing) > 1 else ")"))
        return [folder / n for n in names]
    files = sorted(p for p in folder.glob("model*.safetensors") if p.is_file())
    if not files:
        raise CheckpointError(f"{folder}: no model*.safetensors files")
    return files


def read_header(path: Path) -> list[StoredTensor]:
    """The tensors of one safetensors file, sorted by name, with offsets checked against its size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated (no safetensors header)")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 1 << 30:
            raise CheckpointError(f"{path}: not a safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CheckpointError(f"{path}: not a safetensors file (bad JSON header)") from None
    data_start = 8 + n
    tensors = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {dtype}; rax converts F32, F16 and BF16 "
                                  "checkpoints (not quantized ones)")
        expected = int(np.prod(shape)) * _DTYPES[dtype].itemsize if shape else _DTYPES[dtype].itemsize
        if end - begin != expected or data_start + end > size:
            raise CheckpointError(f"{path}: truncated or corrupt (tensor {name} does not fit)")
        tensors.append(StoredTensor(name, dtype, shape, path, data_start + begin, end - begin))
    return sorted(tensors, key=lambda t: t.name)


class SafetensorsCheckpoint:
    """All tensors of a checkpoint folder, by name, memory-mapped on first use."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.tensors: dict[str, StoredTensor] = {}
        for path in shard_files(self.folder):
            for t in read_header(path):
                self.tensors.setdefault(t.name, t)
        index = self.folder / INDEX_FILE
        if index.is_file():
            listed = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
            missing = sorted(listed - set(self.tensors))
            if missing:
                raise CheckpointError(f"{self.folder}: tensor {missing[0]} is listed in {INDEX_FILE} "
                                      "but in none of the shards")
        self._maps: dict[Path, mmap.mmap] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with open(path, "rb") as f:
                self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[path]

    def stored(self, name: str) -> np.ndarray:
        """The tensor's data as stored (bfloat16 as its uint16 bits), a zero-copy view, rows × cols."""
        t = self.tensors[name]
        dtype = _DTYPES[t.dtype]
        flat = np.frombuffer(self._map(t.file), dtype=dtype, count=t.n_bytes // dtype.itemsize, offset=t.offset)
        return flat.reshape(t.n_rows, t.n_cols)

    def rows(self, name: str, start: int = 0, stop: int | None = None, index: np.ndarray | None = None) -> np.ndarray:
        """float32 rows [start:stop] of the tensor as 2-D (or the rows `index`, in that order).

        The pages of a contiguous run of rows are dropped once copied: reading a 1 GB
        embedding a chunk at a time then never holds more than a chunk of it."""
        t = self.tensors[name]
        raw = self.stored(name)
        if index is not None:
            return widen(raw[index], t.dtype)
        start, stop, _ = slice(start, stop).indices(raw.shape[0])
        values = widen(raw[start:stop], t.dtype)
        row_bytes = t.n_bytes // max(1, t.n_rows)
        self._drop(t.file, t.offset + start * row_bytes, (stop - start) * row_bytes)
        return values

    def array(self, name: str) -> np.ndarray:
        """The whole tensor as float32, in its own shape (for small tensors)."""
        return self.rows(name).reshape(self.tensors[name].shape)

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process's resident set (the file is untouched)."""
        t = self.tensors[name]
        self._drop(t.file, t.offset, t.n_bytes)

    def _drop(self, path: Path, offset: int, n_bytes: int) -> None:
        mm = self._maps.get(path)
        if mm is None or not hasattr(mm, "madvise") or n_bytes <= 0:
            return
        start = offset // _PAGE * _PAGE
        end = min(len(mm), -(-(offset + n_bytes) // _PAGE) * _PAGE)
        try:       # clean file-backed pages: they stay in the page cache, only our mapping lets go
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:          # a view still alive; the mapping goes with it
                pass
        self._maps.clear()


def widen(part: np.ndarray, dtype: str) -> np.ndarray:
    """float32 copy of stored values: bfloat16 bits shifted into the top half of a float32."""
    if dtype == "BF16":
        return (part.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return part.astype(np.float32)
