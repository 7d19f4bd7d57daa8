"""`rax quantize SRC OUT --type T [--mmproj P]`: paths checked up front, a progress bar by
bytes on standard error, a one-line summary per file written. The work is in quant.convert."""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

from .errors import UserError


def _check_output(path: Path, src: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the output file name (e.g. {path / 'model.gguf'})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{path}: cannot write there (no folder {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write there (folder {parent} is not writable)")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{path}: cannot overwrite (file is read-only)")
    if path.exists() and src.exists() and path.resolve() == src.resolve():
        raise UserError(f"{path}: the output would overwrite the input")


def quantize(src: str, out: str, type_name: str, mmproj: str | None, stderr: TextIO,
             show_progress: bool = True) -> list[dict]:
    """Write the file(s); returns one summary dict per file (path, bytes, tensor types, seconds)."""
    from quant import convert
    from quant.errors import ConversionError

    src_path, out_path = Path(src), Path(out)
    mmproj_path = Path(mmproj) if mmproj else None
    if not src_path.exists():
        raise UserError(f"{src}: no such file or folder")
    try:
        convert.file_type(type_name)
    except ConversionError as exc:
        raise UserError(str(exc)) from None
    for path in filter(None, (out_path, mmproj_path)):
        _check_output(path, src_path)
    if mmproj_path is not None and mmproj_path.resolve() == out_path.resolve():
        raise UserError(f"{mmproj}: --mmproj must differ from OUT")

    try:
        plans, close = convert.plan(src_path, out_path, type_name, mmproj_path)
    except ConversionError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{exc.filename or src}: {exc.strerror}") from None
    try:
        seconds = _write(plans, stderr, show_progress)
    except ConversionError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{exc.filename or out}: {exc.strerror or exc}") from None
    finally:
        close()
    return [{"path": str(p.path), "bytes": p.path.stat().st_size, "seconds": round(s, 2),
             "tensor_types": dict(Counter(t.qtype.name for t in p.tensors))} for p, s in zip(plans, seconds)]


def _write(plans, stderr: TextIO, show_progress: bool) -> list[float]:
    """Write each plan's file; the seconds each took. The bar counts bytes read from the source."""
    from quant import convert
    seconds = []
    if not show_progress:
        for p in plans:
            start = time.perf_counter()
            convert.run([p])
            seconds.append(time.perf_counter() - start)
        return seconds
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stderr), transient=False) as bar:
        for p in plans:
            task = bar.add_task(p.path.name, total=p.source_bytes)
            start = time.perf_counter()
            convert.run([p], progress=lambda n, task=task: bar.advance(task, n))
            seconds.append(time.perf_counter() - start)
    return seconds
