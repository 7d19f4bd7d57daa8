"""Pictures and videos into a prompt: the public API of rax's vision path.

Callers (`rax run`, the REPL, the server) use five things:

    mmproj = find_mmproj(model_path, args.mmproj)      # Path | None
    vision = load_vision(mmproj, text_model.config)     # VisionModel; UserError if it does not fit
    media = [load_image(p, vision) for p in images] + [load_video(v, vision)]   # VisualInput
    seg = encode_prompt(tokenizer, text_model, vision, rendered_text, media, state.next_position)
    for step in generator.generate(seg.ids, state, settings,
                                   embeddings=seg.embeddings, positions=seg.positions): ...

`rendered_text` is chat-template output holding, per picture, the template's
`<|vision_start|><|image_pad|><|vision_end|>` (per video `…<|video_pad|>…`); `media` lists the
pictures and videos in the order their placeholders appear. encode_prompt does what
transformers' Qwen3VLProcessor and Qwen3_5Model do with them:
  * each `<|image_pad|>` becomes one pad per merged patch block (grid t·h·w / 4);
  * each `<|video_pad|>` becomes, per temporal pair, `<t seconds>` text then
    `<|vision_start|>` + pads + `<|vision_end|>` (the template's own start/end stay around);
  * the pads' embeddings are replaced by the vision tower's output;
  * positions follow `get_rope_index`: text advances all three streams by one; a picture
    (or one temporal pair of a video) at position p gives its tokens (p, p + row, p + col)
    and the text after it resumes at p + max(rows, cols).
For later turns of a chat pass only the new text and media, with start_position =
state.next_position (TextModel.forward leaves it at max(position) + 1).

Every error a user can cause (no mmproj, a file that is not one, an mmproj made for another
model, an undecodable picture, an empty frame folder, an unreadable video, placeholders that
do not match the media) raises `UserError` with a one-line message.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media as media_io
from .engine.mmproj import VisionWeights
from .engine.vision import VisionTower
from .engine.weights import ModelFileError
from .errors import UserError
from .media import PreprocessConfig, VisualInput

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
_PADS = re.compile(re.escape(IMAGE_PAD) + "|" + re.escape(VIDEO_PAD))


@dataclass
class VisionModel:
    """An opened mmproj: the tower and the processor settings that go with it."""
    path: Path
    weights: VisionWeights
    tower: VisionTower          # or engine/gpu/vision.py DeviceVisionTower: the same encode
    preprocess: PreprocessConfig

    def encode(self, visual: VisualInput) -> np.ndarray:
        return self.tower.encode(visual)


@dataclass
class Segment:
    ids: list[int]              # prompt ids after pad expansion
    embeddings: np.ndarray      # [T, n_embd] float32, vision rows spliced in
    positions: np.ndarray       # [3, T] int64 rotary positions (temporal, height, width)
    next_position: int          # where text after this segment starts
    vision_s: float             # seconds spent in the vision tower


def find_mmproj(model_path: str | Path, explicit: str | None) -> Path | None:
    """--mmproj, else the one mmproj*.gguf beside the model, else None."""
    if explicit:
        return Path(explicit)
    folder = Path(model_path).parent
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().startswith("mmproj") and p.suffix.lower() == ".gguf")
    if len(found) > 1:
        raise UserError(f"several mmproj files beside the model ({', '.join(p.name for p in found)}): "
                        f"choose one with --mmproj")
    return found[0] if found else None


def load_vision(mmproj_path: str | Path, text_config, device: str = "cpu") -> VisionModel:
    """Open an mmproj and check it projects into the text model's width; device "gpu": the
    tower runs on the GPU (engine/gpu/vision.py)."""
    path = Path(mmproj_path)
    try:
        weights = VisionWeights(path)
    except ModelFileError as exc:
        raise UserError(str(exc)) from None
    c = weights.config
    if c.projection_dim != text_config.n_embd:
        raise UserError(f"{path}: this mmproj projects into width {c.projection_dim}, but the text model's "
                        f"width is {text_config.n_embd}: they belong to different models")
    defaults = PreprocessConfig()
    preprocess = PreprocessConfig(
        patch_size=c.patch_size, merge_size=c.merge_size, temporal_patch_size=c.temporal_patch_size,
        image_mean=c.image_mean, image_std=c.image_std,
        image_min_pixels=c.image_min_pixels or defaults.image_min_pixels,
        image_max_pixels=c.image_max_pixels or defaults.image_max_pixels)
    return VisionModel(path, weights, _tower(weights, device), preprocess)


def _tower(weights: VisionWeights, device: str):
    if device != "gpu":
        return VisionTower(weights)
    from .engine.gpu.runtime import DeviceUnavailable, cuda_arrays
    from .engine.gpu.vision import DeviceVisionTower
    try:
        return DeviceVisionTower(weights, cuda_arrays())
    except DeviceUnavailable as exc:
        raise UserError(str(exc)) from None


def load_image(path: str | Path, vision: VisionModel) -> VisualInput:
    return media_io.load_image(path, vision.preprocess)


def load_video(path: str | Path, vision: VisionModel) -> VisualInput:
    return media_io.load_video(path, vision.preprocess)


def _special_id(tokenizer, text: str) -> int:
    token = tokenizer.id_of(text)
    if token is None:
        raise UserError(f"the model's vocabulary has no {text} token: it cannot take pictures or videos")
    return token


def check_placeholders(rendered_text: str, media: list[VisualInput]) -> list[str]:
    """The pad tokens of the prompt, in order; they must match the media one to one."""
    pads = _PADS.findall(rendered_text)
    kinds = [IMAGE_PAD if m.kind == "image" else VIDEO_PAD for m in media]
    if pads != kinds:
        n_img, n_vid = pads.count(IMAGE_PAD), pads.count(VIDEO_PAD)
        g_img, g_vid = kinds.count(IMAGE_PAD), kinds.count(VIDEO_PAD)
        raise UserError(f"the prompt has places for {n_img} image(s) and {n_vid} video(s) "
                        f"({IMAGE_PAD} / {VIDEO_PAD}), but {g_img} image(s) and {g_vid} video(s) were given")
    return pads


class _Builder:
    """Accumulates ids and positions as get_rope_index lays them out."""

    def __init__(self, start: int):
        self.ids: list[int] = []
        self.positions: list[np.ndarray] = []
        self.current = start
        self.vision_rows: list[tuple[int, np.ndarray]] = []    # (first row, embeddings)

    def text(self, ids: list[int]) -> None:
        if ids:
            self.ids.extend(ids)
            self.positions.append(np.broadcast_to(np.arange(self.current, self.current + len(ids)), (3, len(ids))))
            self.current += len(ids)

    def vision(self, pad_id: int, grid_h: int, grid_w: int, embeddings: np.ndarray) -> None:
        """One picture or one temporal pair: merged grid grid_h × grid_w."""
        n = grid_h * grid_w
        self.vision_rows.append((len(self.ids), embeddings))
        self.ids.extend([pad_id] * n)
        rows, cols = np.divmod(np.arange(n), grid_w)
        p = self.current
        self.positions.append(np.stack([np.full(n, p), p + rows, p + cols]))
        self.current = p + max(grid_h, grid_w)


def encode_prompt(tokenizer, text_model, vision: VisionModel | None, rendered_text: str,
                  media: list[VisualInput], start_position: int) -> Segment:
    """Tokenize `rendered_text` with its media expanded, embed, splice, position (see above)."""
    pads = check_placeholders(rendered_text, media)
    if media and vision is None:
        raise UserError("pictures and videos need the vision model: pass --mmproj FILE")
    pieces = _PADS.split(rendered_text)
    built = _Builder(start_position)
    vision_s = 0.0
    if media:
        image_pad, video_pad = _special_id(tokenizer, IMAGE_PAD), _special_id(tokenizer, VIDEO_PAD)
        start_id, end_id = _special_id(tokenizer, VISION_START), _special_id(tokenizer, VISION_END)
    for i, piece in enumerate(pieces):
        built.text(tokenizer.encode(piece) if piece else [])
        if i == len(pads):
            break
        visual = media[i]
        t0 = time.perf_counter()
        embeds = vision.encode(visual)
        vision_s += time.perf_counter() - t0
        m = visual.config.merge_size
        gt, gh, gw = visual.grid_thw
        gh, gw = gh // m, gw // m
        if visual.kind == "image":
            built.vision(image_pad, gh, gw, embeds)
            continue
        per_frame = gh * gw
        for t, stamp in enumerate(visual.timestamps):     # one block per temporal pair
            built.text(tokenizer.encode(f"<{stamp:.1f} seconds>") + [start_id])
            built.vision(video_pad, gh, gw, embeds[t * per_frame:(t + 1) * per_frame])
            built.text([end_id])
    if not built.ids:
        raise UserError("the prompt is empty")
    embeddings = text_model.embed(built.ids)
    width = embeddings.shape[1]
    for row, rows in built.vision_rows:
        if rows.shape[1] != width:
            raise UserError(f"the vision model's width {rows.shape[1]} does not match the text model's {width}")
        embeddings[row:row + len(rows)] = rows
    positions = np.concatenate(built.positions, axis=1).astype(np.int64)
    return Segment(built.ids, np.ascontiguousarray(embeddings, dtype=np.float32), positions,
                   max(start_position, int(positions.max()) + 1), vision_s)
