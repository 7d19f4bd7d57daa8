"""Reading a GGUF file for requantization: metadata with its value types, tensors as row bytes.

Requantizing copies every key-value entry as it is (same GGUF value types), so unlike
`raxcli.engine.gguf_file` this reader keeps the type of each value. Tensor data stays in a
read-only memory map; `rows()` hands out zero-copy row slices.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from .errors import ConversionError
from .gguf_out import _SCALARS, Metadata

V = GGUFValueType
_PAGE = mmap.PAGESIZE


class GGUFReadError(ConversionError):
    """Not a GGUF file, or a truncated one."""


@dataclass(frozen=True)
class SourceTensor:
    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]          # NumPy order
    offset: int                     # absolute
    n_bytes: int

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1


class GGUFSource:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise GGUFReadError(f"{self.path}: cannot read ({exc})") from None
        self._pos = 0
        self.metadata = Metadata()
        self.tensors: dict[str, SourceTensor] = {}
        try:
            self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, GGUFReadError):
                raise
            raise GGUFReadError(f"{self.path}: truncated or corrupt GGUF header") from None

    def _unpack(self, fmt: str):
        value = struct.unpack_from(fmt, self._mm, self._pos)[0]
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._unpack("<Q")
        if self._pos + n > len(self._mm):
            raise GGUFReadError(f"{self.path}: truncated string in header")
        s = self._mm[self._pos:self._pos + n].decode("utf-8")
        self._pos += n
        return s

    def _value(self, vtype: GGUFValueType):
        if vtype == V.STRING:
            return self._string(), None
        if vtype == V.ARRAY:
            sub = V(self._unpack("<I"))
            count = self._unpack("<Q")
            if sub == V.STRING:
                return [self._string() for _ in range(count)], sub
            if sub == V.ARRAY:
                raise GGUFReadError(f"{self.path}: nested arrays are not supported")
            dtype = np.dtype(_SCALARS[sub])
            arr = np.frombuffer(self._mm, dtype=dtype, count=count, offset=self._pos)
            self._pos += count * dtype.itemsize
            return arr.tolist(), sub
        return self._unpack(_SCALARS[vtype]), None

    def _parse(self) -> None:
        if len(self._mm) < 24 or self._mm[:4] != b"GGUF":
            raise GGUFReadError(f"{self.path}: not a GGUF file")
        self._pos = 4
        version = self._unpack("<I")
        if version not in (2, 3):
            raise GGUFReadError(f"{self.path}: unsupported GGUF version {version}")
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        for _ in range(n_kv):
            key = self._string()
            vtype = V(self._unpack("<I"))
            value, sub = self._value(vtype)
            self.metadata.add(key, value, vtype, sub)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            dims = [self._unpack("<Q") for _ in range(self._unpack("<I"))]
            qtype = GGMLQuantizationType(self._unpack("<I"))
            infos.append((name, dims, qtype, self._unpack("<Q")))
        align = int(self.metadata["general.alignment"]) if "general.alignment" in self.metadata else 32
        data_start = -(-self._pos // align) * align
        for name, dims, qtype, offset in infos:
            block, size = GGML_QUANT_SIZES[qtype]
            n_bytes = int(np.prod(dims)) // block * size
            if data_start + offset + n_bytes > len(self._mm):
                raise GGUFReadError(f"{self.path}: truncated (tensor {name} ends past the end of the file)")
            self.tensors[name] = SourceTensor(name, qtype, tuple(reversed(dims)), data_start + offset, n_bytes)

    def rows(self, name: str, start: int, stop: int, convert=None) -> np.ndarray:
        """Rows [start:stop] of the tensor seen as 2-D: a copy of their bytes, uint8 [stop - start,
        row bytes], or convert(zero-copy view) when given. Their pages are dropped afterwards."""
        t = self.tensors[name]
        row = t.n_bytes // t.n_rows
        offset, count = t.offset + start * row, (stop - start) * row
        view = np.frombuffer(self._mm, np.uint8, count=count, offset=offset).reshape(stop - start, row)
        out = convert(view) if convert is not None else view.copy()
        del view
        self._drop(offset, count)
        return out

    def release(self, name: str) -> None:
        t = self.tensors[name]
        self._drop(t.offset, t.n_bytes)

    def _drop(self, offset: int, n_bytes: int) -> None:
        start = offset // _PAGE * _PAGE
        end = min(len(self._mm), -(-(offset + n_bytes) // _PAGE) * _PAGE)
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (AttributeError, OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:
            pass
