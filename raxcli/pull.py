"""`rax pull REPO[:QUANT]`: a GGUF and its mmproj from the Hugging Face hub.

Files go to ~/.cache/rax/models/OWNER--NAME/, where `rax chat` and `rax run` look. The
download is written to `NAME.part` beside the target and renamed when whole, so an
interrupted pull continues where it stopped the next time (huggingface_hub's own
`hf_hub_download` starts over after an interruption since version 1.x). `HF_ENDPOINT`
points it at a mirror, and `HF_TOKEN` at private or gated repositories, as for every
Hugging Face tool.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
from pathlib import Path

from quant.page_cache import release_page_cache

from .errors import UserError

# Preference when no QUANT is named: the usual quality/size balance first.
QUANT_PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q8_0", "Q6_K", "Q4_0", "BF16", "F16")
MMPROJ_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


class PullError(UserError):
    """The hub could not be reached or the transfer failed: not the user's input."""
    exit_code = 1


def models_home() -> Path:
    return Path.home() / ".cache" / "rax" / "models"


def parse_spec(spec: str) -> tuple[str, str | None]:
    """"owner/name:Q4_K_M" → ("owner/name", "Q4_K_M"); a hub URL is accepted too."""
    spec = spec.strip()
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "hf.co/", "huggingface.co/"):
        if spec.startswith(prefix):
            spec = spec[len(prefix):]
    repo, _, quant = spec.partition(":")
    repo = repo.strip("/")
    if not _REPO.match(repo):
        raise UserError(f"{spec!r} is not a Hugging Face repository: write OWNER/NAME[:QUANT], "
                        "e.g. unsloth/Qwen3.5-2B-GGUF:Q4_K_M")
    return repo, quant or None


def _has_tag(name: str, tag: str) -> bool:
    """Does the file name carry the quantisation tag whole (Q4_K is not Q4_K_M)?"""
    return re.search(rf"(?:^|[-._]){re.escape(tag)}(?:[-.]|$)", Path(name).stem, re.IGNORECASE) is not None


def choose_files(files: list[str], quant: str | None) -> tuple[str, str | None]:
    """(the model GGUF, its mmproj or None) among a repository's files."""
    ggufs = [f for f in files if f.lower().endswith(".gguf") and not _SPLIT.search(f)]
    mmprojs = sorted(f for f in ggufs if "mmproj" in Path(f).name.lower())
    models = sorted(f for f in ggufs if f not in mmprojs)
    if not models:
        raise UserError("no single-file GGUF model in this repository" +
                        (" (only split files, which rax does not read)" if any(_SPLIT.search(f) for f in files) else ""))
    if quant:
        matches = [f for f in models if _has_tag(f, quant)]
        if not matches:
            raise UserError(f"no {quant} file here; there are: {', '.join(_tags(models))}")
        model = min(matches, key=len)
    else:
        model = next((f for tag in QUANT_PREFERENCE for f in models if _has_tag(f, tag)), models[0])
    mmproj = next((f for tag in MMPROJ_PREFERENCE for f in mmprojs if _has_tag(f, tag)), mmprojs[0] if mmprojs else None)
    return model, mmproj


def _tags(models: list[str]) -> list[str]:
    out = []
    for f in models:
        m = re.search(r"((?:I?Q\d\w*?)|BF16|F16|F32)(?:\.gguf)$", Path(f).name, re.IGNORECASE)
        out.append(m.group(1) if m else Path(f).name)
    return out


def pull(spec: str, folder: str | Path | None = None, with_mmproj: bool = True, err=None) -> list[Path]:
    err = err or sys.stderr
    repo, quant = parse_spec(spec)
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import HfHubHTTPError
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        raise UserError("rax pull needs huggingface_hub: pip install huggingface_hub") from None
    hub_logging.set_verbosity_error()     # its retry chatter would break the one-line errors
    probe(repo)
    try:
        files = HfApi().list_repo_files(repo)
    except HfHubHTTPError as exc:
        raise _hub_error(repo, exc) from None
    except Exception as exc:  # the transport's own errors (httpx, requests) differ by version
        raise PullError(f"cannot reach the Hugging Face hub for {repo}: {_reason(exc)}") from None
    model, mmproj = choose_files(files, quant)
    folder = Path(folder).expanduser() if folder else models_home() / repo.replace("/", "--")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create: {exc.strerror or exc}") from None
    wanted = [model] + ([mmproj] if with_mmproj and mmproj else [])
    if with_mmproj and not mmproj:
        err.write(f"rax: {repo} has no mmproj file: the model will answer text only\n")
    return [download(repo, name, folder, err) for name in wanted]


def probe(repo: str) -> None:
    """One request without retries, so that an offline machine or a wrong name fails in a
    moment instead of after the half minute of backoff the listing call allows itself.
    Every hub repository has a .gitattributes; a missing one still proves the hub answers."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError
    try:
        get_hf_file_metadata(hf_hub_url(repo, ".gitattributes"))
    except HfHubHTTPError as exc:
        if type(exc).__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
            raise _hub_error(repo, exc) from None
    except Exception as exc:  # the transport's own errors (httpx, requests) differ by version
        raise PullError(f"cannot reach the Hugging Face hub ({_endpoint()}) for {repo}: {_reason(exc)}") from None


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


def download(repo: str, filename: str, folder: Path, err) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import HfHubHTTPError, build_hf_headers

    target = folder / Path(filename).name
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename))
    except HfHubHTTPError as exc:
        raise _hub_error(repo, exc, filename) from None
    except Exception as exc:
        raise PullError(f"cannot reach the Hugging Face hub for {repo}/{filename}: {_reason(exc)}") from None
    size = meta.size
    if target.is_file() and size is not None and target.stat().st_size == size:
        err.write(f"rax: {target} is already here\n")
        return target

    # the part file is tied to the file's version: a changed file on the hub starts over
    tag = re.sub(r"[^0-9A-Za-z]", "", meta.etag or "")[:16] or "noetag"
    part = folder / f"{target.name}.{tag}.part"
    for stale in folder.glob(f"{target.name}.*.part"):
        if stale != part:
            stale.unlink(missing_ok=True)
    resume = part.stat().st_size if part.exists() else 0
    if size is not None and resume > size:
        part.unlink()
        resume = 0

    options = {}
    with _progress_bars(err, target.name, size, resume) as bar_factory:
        if bar_factory is not None and "tqdm_class" in inspect.signature(http_get).parameters:
            options["tqdm_class"] = bar_factory
        try:
            with open(part, "ab") as f:
                http_get(meta.location, f, resume_size=resume, headers=build_hf_headers(), expected_size=size,
                         **options)
        except HfHubHTTPError as exc:
            raise _hub_error(repo, exc, filename) from None
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise PullError(f"download of {filename} stopped: {_reason(exc)}; run the same command again "
                            "to continue") from None
    _verify(part, meta.etag, size, filename, err)
    release_page_cache(part)            # the first load reads it back in large pages (quant/page_cache.py)
    os.replace(part, target)
    err.write(f"rax: {target}\n")
    return target


def _verify(part: Path, etag: str | None, size: int | None, filename: str, err) -> None:
    """Large hub files are LFS objects whose etag is their SHA-256: check the bytes."""
    if size is not None and part.stat().st_size != size:
        raise PullError(f"{filename}: got {part.stat().st_size} bytes, expected {size}; run the command again")
    if etag and re.fullmatch(r"[0-9a-f]{64}", etag):
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        if digest.hexdigest() != etag:
            part.unlink()
            raise PullError(f"{filename}: the download is corrupt (SHA-256 differs from the hub's); run the command again")


class _progress_bars:
    """A Rich download bar on a terminal (bytes, rate, time left); a line per file elsewhere.
    Yields a factory in the shape huggingface_hub's `tqdm_class` is called with."""

    def __init__(self, err, name: str, size: int | None, resume: int):
        self.err, self.name, self.size, self.resume = err, name, size, resume
        self.progress = None

    def __enter__(self):
        human = _bytes(self.size) if self.size else "size unknown"
        if not (hasattr(self.err, "isatty") and self.err.isatty()) or os.environ.get("NO_COLOR"):
            resumed = f", resuming at {_bytes(self.resume)}" if self.resume else ""
            self.err.write(f"rax: downloading {self.name} ({human}{resumed})\n")
            self.err.flush()
            return None
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=Console(file=self.err))
        self.progress.start()
        task = self.progress.add_task(self.name, total=self.size, completed=self.resume)
        progress = self.progress

        class Bar:
            def __init__(self, *args, **kwargs):
                pass

            def update(self, n=1):
                progress.advance(task, n)

            def close(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Bar

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False


def _bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def _hub_error(repo: str, exc, filename: str | None = None) -> UserError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    what = f"{repo}/{filename}" if filename else repo
    kind = type(exc).__name__
    if kind == "GatedRepoError":
        return UserError(f"{repo}: a gated repository: accept its terms on huggingface.co and set HF_TOKEN")
    if kind == "RepositoryNotFoundError":
        return UserError(f"{repo}: no such repository on the hub (or a private one: set HF_TOKEN)")
    if status in (401, 403):
        return UserError(f"{what}: access refused by the hub (a gated or private repository: accept its terms "
                         "on huggingface.co and set HF_TOKEN)")
    if status == 404:
        return UserError(f"{what}: not found on the hub")
    return PullError(f"{what}: the hub answered {status or ''} {_reason(exc)}".replace("  ", " "))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
