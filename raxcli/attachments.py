"""Pictures and videos named in a typed message, as Ollama finds them: a path to an
existing image or video file anywhere in the text is attached and taken out of the words.

Terminals paste a dropped file as a bare path, a quoted path, or a path with its spaces
escaped by backslashes (`my\\ photo.png`); all three are understood, and so is a bare path
with spaces, by trying the longest run of words that ends in the extension and exists.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")
_ENDING = re.compile(r"\.(?:%s)(?=$|[\s'\"),;:!?])" % "|".join(
    e[1:] for e in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS), re.IGNORECASE)


def kind_of(path: str | Path) -> str | None:
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def resolve(candidate: str, cwd: Path | None = None) -> Path | None:
    """The file a typed path names (quotes, `file://`, escaped spaces, `~` understood)."""
    text = candidate.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if text.startswith("file://"):
        text = unquote(text[len("file://"):])
    text = re.sub(r"\\(.)", r"\1", text)
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.is_absolute() and cwd is not None:
        path = cwd / path
    try:
        return path.resolve() if path.is_file() else None
    except OSError:
        return None


def find_media(message: str, cwd: Path | None = None) -> tuple[str, list[tuple[str, Path]]]:
    """(the message without the paths, [("image" | "video", path), ...] in order)."""
    cwd = cwd or Path.cwd()
    found: list[tuple[str, Path]] = []
    kept: list[str] = []
    position = 0
    for ending in _ENDING.finditer(message):
        end = ending.end()
        if end <= position:
            continue
        if end < len(message) and message[end] in "'\"":
            end += 1          # the closing quote belongs to the path
        path = None
        for start in _starts(message, position, ending.start()):
            path = resolve(message[start:end], cwd)
            if path is not None:
                break
        if path is None:
            continue
        kept.append(message[position:start])
        found.append((kind_of(path), path))
        position = end
    kept.append(message[position:])
    text = re.sub(r"[ \t]{2,}", " ", "".join(kept))
    text = re.sub(r"[ \t]+([?.!,;:])", r"\1", text).strip()
    return text, found


def _starts(message: str, lower: int, upper: int):
    """Where a path ending before `upper` may begin, longest first: the start of the text or
    just after a space that is not escaped."""
    for i in range(lower, upper):
        if i == 0 or (message[i - 1].isspace() and (i < 2 or message[i - 2] != "\\")) or i == lower:
            if not message[i].isspace():
                yield i
