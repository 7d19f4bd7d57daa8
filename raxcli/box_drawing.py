"""Labelled boxes drawn on the picture, written as PNG.

Each label gets its own colour (hues a golden-ratio step apart, so the first labels are far
apart on the colour wheel). The label sits on a band of that colour above its box, or inside
its top, below it, or inside its bottom when the place above is outside the image or taken by
another label; its text is black or white, whichever contrasts more. Line width and text size
follow the image size. All outlines are drawn before any label, so no line crosses a label.
"""
from __future__ import annotations

import colorsys
import os
import secrets
from functools import lru_cache
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

# Fonts tried for each label, in order; the first that has a glyph for every character is used
# (DejaVu covers Latin, Greek and Cyrillic; the others CJK). Pillow's own font is the fallback.
FONT_FILES = ("DejaVuSans.ttf", "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf",
              "wqy-microhei.ttc", "DroidSansFallbackFull.ttf", "Arial Unicode.ttf")
_NO_GLYPH = "\U0010ffff"  # a noncharacter: every font draws its "missing glyph" for it
_GOLDEN_RATIO = 0.6180339887498949


def label_colour(index: int) -> tuple[int, int, int]:
    """The colour of the `index`-th distinct label."""
    hue = (index * _GOLDEN_RATIO) % 1.0
    value = 0.95 if index % 2 == 0 else 0.7  # alternate brightness to part neighbouring hues more
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.9, value))


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `background` (WCAG relative luminance)."""
    def linear(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    luminance = 0.2126 * linear(background[0]) + 0.7152 * linear(background[1]) + 0.0722 * linear(background[2])
    # contrast with black (L + 0.05) / 0.05 beats contrast with white 1.05 / (L + 0.05) above L ≈ 0.179
    return (0, 0, 0) if (luminance + 0.05) ** 2 > 0.05 * 1.05 else (255, 255, 255)


def line_width(width: int, height: int) -> int:
    return max(2, round(min(width, height) / 240))


def font_size(width: int, height: int) -> int:
    return min(max(round(min(width, height) / 28), 12), 64)


def upright_rgb(image: Image.Image | str | os.PathLike) -> Image.Image:
    """The image as the model sees it: EXIF orientation applied, RGB, transparency on white."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            opened.load()
            return upright_rgb(opened)
    image = ImageOps.exif_transpose(image)  # a transposed copy; the caller's image is untouched
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        samples = image.convert("F")
        sixteen_bit = image.mode.startswith("I;16") or samples.getextrema()[1] > 255
        scale = 255 / 65535 if sixteen_bit else 1.0
        image = samples.point(lambda v: v * scale).convert("L")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def draw_boxes(image: Image.Image | str | os.PathLike, boxes: Sequence[Mapping | object],
               path: str | os.PathLike) -> None:
    """Write `image` with `boxes` drawn on it to `path` as PNG, atomically.

    `boxes` are pixel boxes of the upright image: `grounding.PixelBox` records or the dicts of
    `rax run --json` ({"label", "box": [x1, y1, x2, y2]}, optional "point": [x, y]).
    """
    canvas = upright_rgb(image)
    width, height = canvas.size
    draw = ImageDraw.Draw(canvas)
    stroke = line_width(width, height)
    colours: dict[str, tuple[int, int, int]] = {}
    shapes = []
    for entry in boxes:
        label, box, point = _fields(entry)
        colour = colours.setdefault(label.casefold(), label_colour(len(colours)))
        shapes.append((label, _draw_shape(draw, box, point, colour, stroke, width, height), colour))
    size = font_size(width, height)
    taken: list[tuple[int, int, int, int]] = []  # label bands drawn so far, to keep apart
    for label, extent, colour in shapes:
        if label:
            _draw_label(draw, label, extent, colour, size, width, height, taken)
    _write_png_atomically(canvas, path)


def _fields(entry) -> tuple[str, tuple[int, int, int, int], tuple[int, int] | None]:
    if isinstance(entry, Mapping):
        label, box, point = entry.get("label", ""), entry["box"], entry.get("point")
    else:
        label, box, point = entry.label, entry.box, entry.point
    if len(box) != 4 or (point is not None and len(point) != 2):
        raise ValueError(f"a box is [x1, y1, x2, y2] and a point [x, y], not {box!r} / {point!r}")
    return (str(label or ""), tuple(round(v) for v in box),
            None if point is None else tuple(round(v) for v in point))


def _draw_shape(draw, box, point, colour, stroke, width, height) -> tuple[int, int, int, int]:
    """Draw an outline (or a dot for a point); return the pixel extent a label attaches to."""
    def clamp(v: int, side: int) -> int:
        return min(max(v, 0), side - 1)

    if point is not None:
        x, y = clamp(point[0], width), clamp(point[1], height)
        radius = 2 * stroke + 1
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour,
                     outline=text_colour(colour), width=max(1, stroke // 2))
        return (x - radius, y - radius, x + radius, y + radius)
    # edge coordinates → inclusive pixel rectangle; the stroke grows inward from the edges
    x1, y1 = clamp(box[0], width), clamp(box[1], height)
    x2, y2 = max(clamp(box[2] - 1, width), x1), max(clamp(box[3] - 1, height), y1)
    draw.rectangle((x1, y1, x2, y2), outline=colour, width=stroke)
    return (x1, y1, x2, y2)


def _draw_label(draw, label, extent, colour, size, width, height, taken: list) -> None:
    font = _font_for(label, size)
    pad = max(2, size // 5)
    text, text_width = _fit(draw, label, font, width - 2 * pad)
    band_width = text_width + 2 * pad
    band_height = _line_height(font) + 2 * pad
    x, y = _band_place(extent, band_width, band_height, width, height, taken)
    taken.append((x, y, x + band_width, y + band_height))
    draw.rectangle((x, y, x + band_width - 1, y + band_height - 1), fill=colour)
    draw.text((x + pad, y + pad), text, font=font, fill=text_colour(colour))


def _band_place(extent, band_width, band_height, width, height, taken) -> tuple[int, int]:
    """Top-left of a label band: above the box, else inside its top, below it, inside its
    bottom — the first of these inside the image and clear of the bands already drawn."""
    x1, y1, _, y2 = extent
    x = min(max(x1, 0), max(width - band_width, 0))
    rows = [y1 - band_height, y1, y2 + 1, y2 + 1 - band_height]
    rows = [y for y in rows if 0 <= y <= height - band_height] or [min(max(y1, 0), max(height - band_height, 0))]
    for y in rows:
        if not any(x < b[2] and b[0] < x + band_width and y < b[3] and b[1] < y + band_height for b in taken):
            return x, y
    return x, rows[0]


def _fit(draw, label: str, font, room: int) -> tuple[str, int]:
    """`label`, shortened with an ellipsis until it fits in `room` pixels; and its width."""
    text = label if len(label) <= 80 else label[:79] + "…"
    while True:
        _, _, right, _ = draw.textbbox((0, 0), text, font=font)
        if right <= room or len(text) <= 1:
            return text, right
        text = text[:-2].rstrip() + "…" if len(text) > 2 else text[:1]


@lru_cache(maxsize=64)
def _line_height(font) -> int:
    _, _, _, bottom = font.getbbox("Agjy|ÉÅ")  # ascenders, descenders and accents
    return bottom


@lru_cache(maxsize=None)
def _fonts(size: int) -> tuple:
    fonts = []
    for name in FONT_FILES:
        try:
            fonts.append(ImageFont.truetype(name, size))
        except OSError:
            continue
    fonts.append(ImageFont.load_default(size=size))
    return tuple(fonts)


@lru_cache(maxsize=1024)
def _font_for(label: str, size: int):
    fonts = _fonts(size)
    for font in fonts:
        missing = _glyph_signature(font, _NO_GLYPH)
        if all(ch.isspace() or _glyph_signature(font, ch) != missing for ch in label):
            return font
    return fonts[0]


def _glyph_signature(font, char: str) -> tuple:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


def _write_png_atomically(image: Image.Image, path: str | os.PathLike) -> None:
    """Write next to `path` under a temporary name, then rename: readers never see half a file."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as out:  # "x": never clobber; default permissions
            image.save(out, format="PNG")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
