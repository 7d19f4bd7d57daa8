"""Images and videos → resized frames and `grid_thw`, as transformers' Qwen3.5 processors make them.

The rules are those of transformers 5.23 (`Qwen2VLImageProcessor` for images,
`Qwen3VLVideoProcessor` for videos, `Qwen3VLProcessor` for the prompt text), with the
bounds of Qwen3.5's preprocessor configs unless the mmproj says otherwise:

- sides rounded to multiples of patch × merge (32) with Python's `round` (half to even),
  then scaled into [min_pixels, max_pixels] (images 65,536 … 16,777,216; a video's bound
  counts all its frames: 4,096 … 25,165,824);
- resampling: torchvision's antialiased bicubic on uint8, reproduced bit for bit by
  `resize.resize_bicubic` (Pillow's BICUBIC rounds differently: up to a few levels off);
- normalisation (x − 255·mean) / (255·std) in float32 (the processor's fused rescale);
- patches in merge-block order with the image repeated over the temporal patch
  (`pixel_values`), grid_thw in patches;
- video: frames sampled at 2 fps (`int(n / fps · 2)` clamped to [4, 768] and to n,
  `linspace(0, n − 1).round()`), an odd count padded with the last frame, and one
  `<t seconds>` stamp per temporal pair (the mean time of the pair, one decimal).

Decoding: Pillow for images (EXIF orientation applied; transparency composited onto white
as the processor's `convert_to_rgb` does; 16-bit and float images scaled to 8 bits);
OpenCV for video files. A folder of frames is a video already sampled at 2 fps (the
convention of Qwen's qwen-vl-utils); its frames are taken in natural name order and must
all have one size. Frames are resized as they are decoded, so a long or large video never
sits in memory at its native size. Everything a user can get wrong raises `UserError`.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .resize import resize_bicubic

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
FOLDER_FPS = 2.0            # a folder of frames is taken as sampled at this rate
UNKNOWN_FPS = 24.0          # what the processor assumes when a video does not say
MAX_ASPECT = 200            # the processor refuses thinner images


@dataclass(frozen=True)
class PreprocessConfig:
    """Processor settings. Defaults: Qwen3.5's preprocessor_config / video_preprocessor_config."""
    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_min_pixels: int = 65_536
    image_max_pixels: int = 16_777_216
    video_min_pixels: int = 4_096
    video_max_pixels: int = 25_165_824
    video_fps: float = 2.0
    video_min_frames: int = 4
    video_max_frames: int = 768

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


@dataclass
class VisualInput:
    """One image or video, resized, ready for the vision tower.

    frames: uint8 [T, H, W, 3] RGB at the processor's size; T = 1 for an image, even for a
    video (an odd count is padded with the last frame). grid_thw: (T / temporal_patch_size
    or 1, H / patch, W / patch). timestamps: seconds per temporal pair (videos)."""
    kind: str
    source: str
    frames: np.ndarray
    grid_thw: tuple[int, int, int]
    original_size: tuple[int, int]          # (width, height) before resizing
    config: PreprocessConfig
    timestamps: list[float] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w // self.config.merge_size ** 2

    @property
    def tokens_per_frame(self) -> int:
        _, h, w = self.grid_thw
        return h * w // self.config.merge_size ** 2

    def normalised(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 [t, 3, H, W] for frames start..stop: (x − 255·mean) / (255·std)."""
        frames = self.frames[start:stop]
        mean = np.float32(255.0) * np.asarray(self.config.image_mean, np.float32)
        std = np.float32(255.0) * np.asarray(self.config.image_std, np.float32)
        x = frames.transpose(0, 3, 1, 2).astype(np.float32)
        x -= mean[None, :, None, None]
        x /= std[None, :, None, None]
        return x

    def pixel_values(self) -> np.ndarray:
        """The processor's `pixel_values` / `pixel_values_videos`: [t·h·w, 3·T·P·P] float32,
        patches in merge-block order, features ordered (channel, time, row, column)."""
        c = self.config
        P, M, TP = c.patch_size, c.merge_size, c.temporal_patch_size
        x = self.normalised()
        if self.kind == "image":
            x = np.repeat(x, TP, axis=0)                  # an image is its own frame twice
        gt, gh, gw = self.grid_thw
        x = x.reshape(gt, TP, 3, gh // M, M, P, gw // M, M, P)
        x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)        # t, bh, bw, mh, mw, C, T, P, P
        return np.ascontiguousarray(x.reshape(gt * gh * gw, 3 * TP * P * P))


# ---------------------------------------------------------------------------------------
# Sizes and frame sampling (the processors' arithmetic)
# ---------------------------------------------------------------------------------------
def check_aspect(height: int, width: int, source: str) -> None:
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise UserError(f"{source}: a {width}×{height} picture is too thin "
                        f"(the model takes aspect ratios up to {MAX_ASPECT}:1)")


def image_size(height: int, width: int, config: PreprocessConfig) -> tuple[int, int]:
    """Qwen2VLImageProcessor's smart_resize: (height, width) multiples of the factor."""
    f = config.factor
    h_bar = round(height / f) * f
    w_bar = round(width / f) * f
    if h_bar * w_bar > config.image_max_pixels:
        beta = math.sqrt(height * width / config.image_max_pixels)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < config.image_min_pixels:
        beta = math.sqrt(config.image_min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return h_bar, w_bar


def video_size(num_frames: int, height: int, width: int, config: PreprocessConfig) -> tuple[int, int]:
    """Qwen3VLVideoProcessor's smart_resize: the pixel bounds count every frame."""
    f, tf = config.factor, config.temporal_patch_size
    if height < f or width < f:
        scale = max(f / height, f / width)
        height, width = int(height * scale), int(width * scale)
    h_bar = round(height / f) * f
    w_bar = round(width / f) * f
    t_bar = round(num_frames / tf) * tf
    if t_bar * h_bar * w_bar > config.video_max_pixels:
        beta = math.sqrt(num_frames * height * width / config.video_max_pixels)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif t_bar * h_bar * w_bar < config.video_min_pixels:
        beta = math.sqrt(config.video_min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return h_bar, w_bar


def sample_frame_indices(total: int, fps: float, config: PreprocessConfig, cap: int | None = None) -> np.ndarray:
    """Qwen3VLVideoProcessor.sample_frames: `video_fps` frames a second, at least
    `video_min_frames`, at most `video_max_frames` (and `cap`), never more than there are."""
    n = int(total / fps * config.video_fps)
    n = min(max(n, config.video_min_frames), config.video_max_frames, total)
    if cap is not None:
        n = min(n, cap)
    return np.linspace(0, total - 1, n).round().astype(np.int64)


def frame_timestamps(indices, fps: float, temporal_patch_size: int) -> list[float]:
    """Qwen3VLProcessor._calculate_timestamps: the mean time of each temporal pair."""
    idx = [int(i) for i in indices]
    if len(idx) % temporal_patch_size:
        idx.extend([idx[-1]] * (temporal_patch_size - len(idx) % temporal_patch_size))
    t = [i / fps for i in idx]
    return [(t[i] + t[i + temporal_patch_size - 1]) / 2 for i in range(0, len(t), temporal_patch_size)]


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------
def to_rgb(image):
    """A Pillow image in any mode → 8-bit RGB (transparency composited onto white)."""
    from PIL import Image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        # 16-bit samples scale to 8 bits; float/int32 images are taken as already 0..255
        # unless their range says 16-bit
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 1.0
        image = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | Path):
    """Decode an image file upright (EXIF orientation applied) as 8-bit RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image (use --video for a folder of frames)")
    Image.MAX_IMAGE_PIXELS = None           # our own bound below, from available memory
    try:
        with Image.open(path) as im:
            limit_decode_size(im, path)
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file Pillow can decode") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path}: cannot decode the image ({exc})") from None


def limit_decode_size(im, path: Path) -> None:
    """Refuse (or, for JPEG, decode at reduced scale) a picture too big for the memory left."""
    need = im.width * im.height * 4 * 3       # decoded RGB plus the working copies
    budget = available_memory() // 2
    if need <= budget:
        return
    if im.format == "JPEG":
        # libjpeg decodes at 1/2, 1/4, 1/8 scale for almost nothing; still far above the
        # processor's 16.7-megapixel bound, so only the resampling input changes
        # asking for half the size that fits gets a power-of-two reduction in [half, full)
        scale = 2 * math.sqrt(need / budget)
        im.draft("RGB", (max(1, int(im.width / scale)), max(1, int(im.height / scale))))
        if im.width * im.height * 12 <= budget:
            return
    raise UserError(f"{path}: a {im.width}×{im.height} image needs more memory than is free "
                    f"({budget * 2 >> 20} MB available)")


def available_memory() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:       # psutil unavailable on an exotic system: assume a small machine
        return 2 << 30


def resize_rgb(image, height: int, width: int) -> np.ndarray:
    """A Pillow image or uint8 [H, W, 3] array → uint8 [height, width, 3] (torchvision's
    antialiased bicubic, bit for bit)."""
    return resize_bicubic(np.asarray(image, dtype=np.uint8), height, width)


def load_image(path: str | Path, config: PreprocessConfig) -> VisualInput:
    image = open_image(path)
    width, height = image.size
    check_aspect(height, width, str(path))
    h, w = image_size(height, width, config)
    frame = resize_rgb(image, h, w)
    return VisualInput("image", str(path), frame[None], (1, h // config.patch_size, w // config.patch_size),
                       (width, height), config)


# ---------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------
def natural_key(name: str):
    """frame2.png before frame10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise UserError(f"{folder}: no frames in the folder (expected {', '.join(FRAME_EXTENSIONS[:3])} … files)")
    return files


def frame_cap(frame_bytes: int, config: PreprocessConfig) -> int:
    """Most frames to keep: the processor's maximum, fewer when memory is short (each kept
    frame may be held once at its decoded size before resizing, then resized)."""
    by_memory = available_memory() // 2 // max(1, frame_bytes)
    return max(config.temporal_patch_size, min(config.video_max_frames, by_memory))


def assemble_video(source: str, frames: list[np.ndarray], indices, fps: float,
                   native: tuple[int, int], config: PreprocessConfig) -> VisualInput:
    T = len(frames)
    h, w = frames[0].shape[:2]
    pad = -T % config.temporal_patch_size
    stack = np.stack(frames + [frames[-1]] * pad)
    grid = ((T + pad) // config.temporal_patch_size, h // config.patch_size, w // config.patch_size)
    return VisualInput("video", source, stack, grid, native, config,
                       frame_timestamps(indices, fps, config.temporal_patch_size))


def target_video_size(num_frames: int, height: int, width: int, source: str,
                      config: PreprocessConfig) -> tuple[int, int]:
    if num_frames < config.temporal_patch_size:
        raise UserError(f"{source}: a video needs at least {config.temporal_patch_size} frames "
                        f"(found {num_frames}); give a single picture with --image")
    check_aspect(height, width, source)
    return video_size(num_frames, height, width, config)


def load_frame_folder(folder: Path, config: PreprocessConfig) -> VisualInput:
    files = frame_files(folder)
    first = open_image(files[0])
    width, height = first.size
    indices = sample_frame_indices(len(files), FOLDER_FPS, config, frame_cap(width * height * 3, config))
    h, w = target_video_size(len(indices), height, width, str(folder), config)
    frames = []
    for i in indices:
        image = first if i == 0 else open_image(files[i])
        if image.size != (width, height):
            raise UserError(f"{folder}: frames differ in size: {files[0].name} is {width}×{height}, "
                            f"{files[i].name} is {image.size[0]}×{image.size[1]}")
        frames.append(resize_rgb(image, h, w))
    return assemble_video(str(folder), frames, indices, FOLDER_FPS, (width, height), config)


def opencv():
    """cv2, with FFmpeg's and OpenCV's own console chatter off (errors become UserError)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    import cv2
    return cv2


def load_video_file(path: Path, config: PreprocessConfig) -> VisualInput:
    cv2 = opencv()
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UserError(f"{path}: cannot open the video (not a video file OpenCV can decode)")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise UserError(f"{path}: the video has no frames OpenCV can decode")
    fps = fps if fps > 0 and math.isfinite(fps) else UNKNOWN_FPS
    visual = decode_sampled(path, total, fps, width, height, config) if total > 0 else None
    if visual is None:
        # the container did not say how many frames it holds, or promised more than it
        # holds: count what decodes, then sample over that
        total = count_frames(path)
        if total == 0:
            raise UserError(f"{path}: no frame of the video could be decoded")
        visual = decode_sampled(path, total, fps, width, height, config)
        if visual is None:
            raise UserError(f"{path}: the video could not be decoded consistently")
    return visual


def decode_sampled(path: Path, total: int, fps: float, width: int, height: int,
                   config: PreprocessConfig) -> VisualInput | None:
    """Decode the frames the sampler picks out of `total`, each resized as it comes;
    None when the file ends before the last of them."""
    cv2 = opencv()
    indices = sample_frame_indices(total, fps, config, frame_cap(width * height * 3, config))
    h, w = target_video_size(len(indices), height, width, str(path), config)
    wanted = set(int(i) for i in indices)
    kept: dict[int, np.ndarray] = {}
    capture = cv2.VideoCapture(str(path))
    try:
        for index in range(int(indices[-1]) + 1):
            if not capture.grab():              # grab decodes; retrieve converts (sampled only)
                break
            if index in wanted:
                ok, bgr = capture.retrieve()
                if not ok:
                    break
                kept[index] = resize_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), h, w)
    finally:
        capture.release()
    if len(kept) < len(wanted):
        return None
    return assemble_video(str(path), [kept[int(i)] for i in indices], indices, fps, (width, height), config)


def count_frames(path: Path) -> int:
    capture = opencv().VideoCapture(str(path))
    try:
        n = 0
        while capture.grab():
            n += 1
        return n
    finally:
        capture.release()


def load_video(path: str | Path, config: PreprocessConfig) -> VisualInput:
    """A video file (whatever OpenCV's FFmpeg decodes) or a folder of frames."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        return load_frame_folder(path, config)
    return load_video_file(path, config)
