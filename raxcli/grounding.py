"""Boxes the model names in its answer → pixels of the picture → drawn on it.

Two forms are read, anywhere in the answer text:

- Qwen3-VL / Qwen3.5 JSON: ``{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}`` and
  ``{"point_2d": [x, y], "label": …}``, as a list (usually in a ```json fence) or as single
  objects, x first, each coordinate 0–1000 of the image side. The JSON may be sloppy
  (trailing commas, single quotes, extra keys) or cut off: every complete object is kept.
  ``"bbox_2d": [[…], […]]`` gives one box per inner list.
- The Rax card's tags: ``<|object_ref_start|>cat<|object_ref_end|><|box_start|>[ymin, xmin,
  ymax, xmax]<|box_end|>``, y first, 0–1000. A ref may be followed by several box tags, and a
  box tag without a ref gets the label "". Inside a box tag Qwen2-VL's ``(x1,y1),(x2,y2)`` is
  read too (x first): the parentheses make it unambiguous and older fine-tunes still write it.
  The tags are read as literal text, so they are only found when the decoder keeps special
  tokens (rax's does); without them ``cat[1, 2, 3, 4]`` is not read as a box, since nothing
  says which axis comes first.

Text that looks like a box but cannot be read (bad coordinates, a box cut off) never raises:
it stays in the answer and is listed in `Grounding.unparsed`.

Pixels: x → x·W/1000, y → y·H/1000 of the image as the model saw it (EXIF orientation
applied), rounded to the nearest integer, clamped to 0…W and 0…H, corners swapped when
inverted. Boxes are edge coordinates: [0, 0, W, H] is the whole image. A point keeps its
exact position: its box is the zero-size [x, y, x, y] and its dict also carries
"point": [x, y]; it is drawn as a dot.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

from .box_drawing import draw_boxes  # noqa: F401  (part of this module's interface)
from .errors import UserError
from .lenient_json import LenientJSONError, read_value

BOX_KEY = "bbox_2d"
POINT_KEY = "point_2d"
LABEL_KEY = "label"
SCALE = 1000  # Qwen3-VL's grounding coordinates are thousandths of each side

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_NOT_A_TAG = r"(?:(?!<\|).)*?"  # text that does not run into the next special token
_TAGGED = re.compile(
    rf"(?:<\|object_ref_start\|>(?P<label>{_NOT_A_TAG})<\|object_ref_end\|>\s*)?"
    rf"(?P<boxes>(?:<\|box_start\|>{_NOT_A_TAG}<\|box_end\|>\s*)+)", re.S)
_BOX_TAG = re.compile(rf"<\|box_start\|>({_NOT_A_TAG})<\|box_end\|>", re.S)
_LOOSE_BOX_START = re.compile(rf"<\|box_start\|>{_NOT_A_TAG}(?=<\||\Z)", re.S)
_YX_LIST = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_LIST_SEPARATORS = re.compile(r"[\s,\[\]]*")
_XY_PAIRS = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_JSON_START = re.compile(r"[\[{]")
_STRAY_KEY = re.compile(rf"[\"']?\b(?:{BOX_KEY}|{POINT_KEY})\b[\"']?\s*:")
_SNIPPET_CHARS = 120


@dataclass(frozen=True)
class RelativeBox:
    """A box or point as the model wrote it, x first, in thousandths of each image side."""
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    is_point: bool = False


@dataclass(frozen=True)
class PixelBox:
    """A box in pixels of the image: edges 0 ≤ x1 ≤ x2 ≤ W, 0 ≤ y1 ≤ y2 ≤ H."""
    label: str
    box: tuple[int, int, int, int]
    point: tuple[int, int] | None = None

    def as_dict(self) -> dict:
        out = {"label": self.label, "box": list(self.box)}
        if self.point is not None:
            out["point"] = list(self.point)
        return out


@dataclass
class Grounding:
    boxes: list[RelativeBox]  # in the order the answer names them
    unparsed: list[str]       # text that looks like a box but could not be read


def parse_grounding(text: str) -> Grounding:
    """Every box and point named in `text`, tag form and JSON form; never raises."""
    found: list[tuple[int, int, RelativeBox]] = []  # (offset, order, box) to sort by place
    unparsed: list[tuple[int, str]] = []
    masked = _read_tags(text, found, unparsed)
    _read_json(masked, found, unparsed)
    found.sort(key=lambda entry: entry[:2])
    unparsed.sort()
    return Grounding([box for _, _, box in found], [snippet for _, snippet in unparsed])


def _read_tags(text: str, found: list, unparsed: list) -> str:
    """Collect tag-form boxes; return `text` with every tag region blanked for the JSON scan."""
    chars = list(text)

    def blank(start: int, end: int) -> None:
        chars[start:end] = " " * (end - start)

    for match in _TAGGED.finditer(text):
        label = (match.group("label") or "").strip()
        for tag in _BOX_TAG.finditer(text, match.start("boxes"), match.end("boxes")):
            boxes = _tag_box_coordinates(tag.group(1))
            if boxes is None:
                unparsed.append((tag.start(), tag.group(0)))
            for order, (x1, y1, x2, y2) in enumerate(boxes or ()):
                found.append((tag.start(), order, RelativeBox(label, x1, y1, x2, y2)))
        blank(match.start(), match.end())
    for loose in _LOOSE_BOX_START.finditer("".join(chars)):  # a box tag never closed
        unparsed.append((loose.start(), loose.group(0)[:_SNIPPET_CHARS]))
        blank(loose.start(), loose.end())
    return "".join(chars)


def _tag_box_coordinates(content: str) -> list[tuple[float, ...]] | None:
    """x-first corners of each box inside one box tag, or None when it cannot be read."""
    pairs = _XY_PAIRS.fullmatch(content.strip())
    if pairs:
        return [tuple(_finite(v) for v in pairs.groups())] if _all_finite(pairs.groups()) else None
    lists = list(_YX_LIST.finditer(content))
    if not lists or _LIST_SEPARATORS.fullmatch(_YX_LIST.sub(",", content)) is None:
        return None
    boxes = []
    for found in lists:
        if not _all_finite(found.groups()):
            return None
        ymin, xmin, ymax, xmax = (_finite(v) for v in found.groups())
        boxes.append((xmin, ymin, xmax, ymax))
    return boxes


def _read_json(text: str, found: list, unparsed: list) -> None:
    """Try each `[` and `{`; keep the box objects of every value that reads."""
    read_spans = []
    pos = 0
    while (start := _JSON_START.search(text, pos)) is not None:
        try:
            value, end = read_value(text, start.start())
        except LenientJSONError:
            pos = start.start() + 1  # a complete object may still start further in
            continue
        boxes, bad = [], []
        _collect_boxes(value, boxes, bad)
        for order, box in enumerate(boxes):
            found.append((start.start(), order, box))
        if bad:
            unparsed.append((start.start(), text[start.start():end][:_SNIPPET_CHARS]))
        read_spans.append((start.start(), end))
        pos = end
    for key in _STRAY_KEY.finditer(text):  # box keys in text that did not read as JSON
        if not any(a <= key.start() < b for a, b in read_spans):
            opening = text.rfind("{", 0, key.start())
            begin = opening if opening >= 0 and key.start() - opening < 8 else key.start()
            snippet = text[begin:].split("\n", 1)[0][:_SNIPPET_CHARS]
            unparsed.append((begin, snippet))


def _collect_boxes(value, boxes: list, bad: list) -> None:
    if isinstance(value, list):
        for item in value:
            _collect_boxes(item, boxes, bad)
    elif isinstance(value, dict):
        if BOX_KEY in value or POINT_KEY in value:
            named = _boxes_of_object(value)
            if named:
                boxes.extend(named)
            else:
                bad.append(value)
        else:
            for item in value.values():
                _collect_boxes(item, boxes, bad)


def _boxes_of_object(obj: dict) -> list[RelativeBox]:
    label = obj.get(LABEL_KEY, "")
    label = label.strip() if isinstance(label, str) else ("" if label is None else str(label))
    if BOX_KEY in obj:
        return [RelativeBox(label, *corners) for corners in _coordinate_lists(obj[BOX_KEY], 4)]
    return [RelativeBox(label, x, y, x, y, is_point=True)
            for x, y in _coordinate_lists(obj[POINT_KEY], 2)]


def _coordinate_lists(value, size: int) -> list[tuple[float, ...]]:
    """[a, b, …] or [[a, b, …], …] of `size` finite numbers each; [] when anything is off."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        lists = [_coordinate_lists(v, size) for v in value]
        return [c[0] for c in lists] if all(lists) else []
    if not isinstance(value, list) or len(value) != size or not _all_finite(value):
        return []
    return [tuple(_finite(v) for v in value)]


def _finite(value) -> float | None:
    """A coordinate: a number or numeric string, finite; None otherwise (and for booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _all_finite(values) -> bool:
    return all(_finite(v) is not None for v in values)


def to_pixels(boxes: Sequence[RelativeBox], width: int, height: int) -> list[PixelBox]:
    """Map thousandths to pixel edges of a `width` × `height` image (clamped, corners ordered)."""
    def scale(value: float, side: int) -> int:
        return min(max(math.floor(value * side / SCALE + 0.5), 0), side)

    out = []
    for b in boxes:
        x1, x2 = sorted((scale(b.x1, width), scale(b.x2, width)))
        y1, y2 = sorted((scale(b.y1, height), scale(b.y2, height)))
        out.append(PixelBox(b.label, (x1, y1, x2, y2), (x1, y1) if b.is_point else None))
    return out


def oriented_size(image_path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image upright, as the model sees it; reads only the header."""
    from PIL import ExifTags, Image
    try:
        with Image.open(image_path) as image:
            width, height = image.size
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{image_path}: cannot read the image: {exc}") from None
    # orientations 5–8 are a quarter turn (with or without a mirror): the sides swap
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def boxes_for_answer(text: str, image_path: str | os.PathLike) -> list[dict]:
    """The "boxes" of `rax run --json`: every box the answer names, in pixels of the image."""
    width, height = oriented_size(image_path)
    return [box.as_dict() for box in to_pixels(parse_grounding(text).boxes, width, height)]


def check_boxes_out(out_path: str | os.PathLike) -> None:
    """Refuse an output path that cannot be written, before the model runs for minutes."""
    directory = os.path.dirname(os.path.abspath(out_path))
    if not str(out_path).lower().endswith(".png"):
        raise UserError(f"--boxes-out {out_path}: the annotated image is written as PNG; name a .png file")
    if not os.path.isdir(directory):
        raise UserError(f"--boxes-out {out_path}: no such directory {directory}")
    if os.path.isdir(out_path):
        raise UserError(f"--boxes-out {out_path}: is a directory")


def save_annotated(image_path: str | os.PathLike, boxes: Sequence[dict | PixelBox],
                   out_path: str | os.PathLike) -> None:
    """Write the image with `boxes` drawn on it to `out_path` (PNG, replaced atomically)."""
    from PIL import Image
    try:
        draw_boxes(image_path, boxes, out_path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"--boxes-out {out_path}: cannot draw on {image_path}: {exc}") from None
