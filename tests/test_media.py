"""Pictures and videos → pixels and grid_thw exactly as transformers' Qwen3.5 processors make them.

References (tests/fixtures/vision/ref/*.npz) come from transformers 5.23 with torchvision
(Qwen2VLImageProcessor, Qwen3VLVideoProcessor): grid_thw, a hash of the exact float32
`pixel_values`, and for a few cases the 8-bit values themselves.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raxcli import media
from raxcli.errors import UserError
from raxcli.resize import axis_weights, resize_bicubic

VISION = Path(__file__).parent / "fixtures" / "vision"
MEDIA = VISION / "media"
MANIFEST = json.loads((VISION / "manifest.json").read_text())
CONFIG = media.PreprocessConfig()          # Qwen3.5's processor settings (the fixture's too)
CASES = [c for c in MANIFEST["cases"] if c != "multi_turn"]


def load_case(case: str) -> list:
    info = MANIFEST["cases"][case]
    out = [media.load_image(MEDIA / name, CONFIG) for name in info["images"]]
    if info["video"]:
        out.append(media.load_video(MEDIA / info["video"], CONFIG))
    return out


@pytest.mark.parametrize("case", CASES)
def test_pixel_values_and_grid_match_transformers_bit_for_bit(case):
    ref = np.load(VISION / "ref" / f"{case}.npz")
    kind = "video" if MANIFEST["cases"][case]["video"] else "image"
    visuals = load_case(case)
    assert [v.grid_thw for v in visuals] == [tuple(g) for g in ref[f"{kind}_grid_thw"]]
    pixels = np.concatenate([v.pixel_values() for v in visuals])
    assert pixels.dtype == np.float32
    if f"{kind}_patches_u8" in ref:          # where kept: how far off, if at all
        x = np.rint(pixels * 127.5 + 127.5).astype(np.int64)
        if kind == "image":
            x = x.reshape(len(x), 3, 2, -1)[:, :, 0].reshape(len(x), -1)
        assert np.abs(x - ref[f"{kind}_patches_u8"]).max() == 0
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == str(ref[f"{kind}_pixel_values_sha256"])


@pytest.mark.parametrize("height, width, expected", [
    (96, 96, (256, 256)),          # below 65,536 pixels: scaled up, sides rounded up to 32
    (517, 333, (512, 320)),        # 517/32 = 16.2 → 16, 333/32 = 10.4 → 10
    (400, 400, (384, 384)),        # 400/32 = 12.5 → 12: Python's round is half to even
    (432, 432, (448, 448)),        # 13.5 → 14 (even)
    (6000, 4000, (4992, 3328)),    # 24 Mpx > 16.7 Mpx: scaled down by √(24/16.7), floored to 32
])
def test_image_size_follows_smart_resize(height, width, expected):
    assert media.image_size(height, width, CONFIG) == expected


def test_video_size_counts_every_frame_against_the_bound():
    # 4 frames of 1080p are 8.3 Mpx: inside 25.2 Mpx, sides just rounded
    assert media.video_size(4, 1080, 1920, CONFIG) == (1088, 1920)
    # 64 frames of 1080p are 133 Mpx: every frame shrinks by √(133 / 25.2)
    h, w = media.video_size(64, 1080, 1920, CONFIG)
    assert 64 * h * w <= CONFIG.video_max_pixels and (h, w) == (448, 832)


def test_thin_pictures_are_refused_with_a_message():
    with pytest.raises(UserError, match="too thin"):
        media.check_aspect(10, 2500, "x.png")


@pytest.mark.parametrize("total, fps, expected", [
    (12, 6.0, [0, 4, 7, 11]),      # 2 s at 2 fps = 4 frames, spread over 0..11
    (5, 2.0, [0, 1, 2, 3, 4]),     # a frame folder (2 fps): every frame
    (3, 30.0, [0, 1, 2]),          # at least 4 frames wanted, never more than there are
    (300, 30.0, np.linspace(0, 299, 20).round().astype(int).tolist()),   # 10 s → 20 frames
])
def test_frames_are_sampled_at_two_per_second(total, fps, expected):
    assert media.sample_frame_indices(total, fps, CONFIG).tolist() == expected


def test_frame_cap_limits_the_count():
    assert len(media.sample_frame_indices(3000, 30.0, CONFIG, cap=50)) == 50


def test_timestamps_average_each_temporal_pair_and_pad_an_odd_count():
    assert media.frame_timestamps([0, 4, 7, 11], 6.0, 2) == [1 / 3, 1.5]
    assert media.frame_timestamps([0, 1, 2, 3, 4], 2.0, 2) == [0.25, 1.25, 2.0]


def test_resize_weights_are_int16_fixed_point_summing_to_one():
    for n_in, n_out in ((333, 320), (64, 256), (1000, 93)):
        first, count, weights, precision = axis_weights(n_in, n_out)
        assert np.abs(weights).max() < 1 << 15
        sums = weights.sum(axis=1) / (1 << precision)
        assert np.allclose(sums, 1.0, atol=count.max() / (1 << precision))
        assert (first >= 0).all() and (first + count <= n_in).all()


def test_resize_keeps_flat_colour_and_matches_shape():
    flat = np.full((37, 53, 3), (10, 200, 99), np.uint8)
    out = resize_bicubic(flat, 64, 96)
    assert out.shape == (64, 96, 3) and (out == (10, 200, 99)).all()
    assert (resize_bicubic(flat, 37, 53) == flat).all()   # same size: nothing to do


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 20:, 3] = 255                        # left half transparent red, right half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(media.open_image(tmp_path / "a.png"))
    assert (rgb[:, :20] == 255).all()
    assert (rgb[:, 20:] == (255, 0, 0)).all()


def test_sixteen_bit_pictures_scale_to_eight_bits(tmp_path):
    values = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)   # 0 .. 65520
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = np.asarray(media.open_image(tmp_path / "deep.png")).astype(int)
    assert rgb.shape == (64, 64, 3)
    assert np.abs(rgb[..., 0] - np.rint(values / 257.0)).max() <= 1
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_exif_orientation_is_applied():
    visual = media.load_image(MEDIA / "exif.jpg", CONFIG)
    stored = Image.open(MEDIA / "exif.jpg")
    assert stored.size == (112, 64)                       # stored sideways
    assert visual.original_size == (64, 112)              # shown upright


@pytest.mark.parametrize("content, message", [
    (b"not a picture", "not an image file"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot decode|not an image file"),
])
def test_undecodable_pictures_raise_user_errors(tmp_path, content, message):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        media.load_image(path, CONFIG)


def test_missing_files_and_folders_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        media.load_image(tmp_path / "nope.png", CONFIG)
    with pytest.raises(UserError, match="is a folder"):
        media.load_image(tmp_path, CONFIG)
    with pytest.raises(UserError, match="no such file"):
        media.load_video(tmp_path / "nope.mp4", CONFIG)


def test_frame_folders_empty_or_of_mixed_sizes_are_refused(tmp_path):
    with pytest.raises(UserError, match="no frames"):
        media.load_video(tmp_path, CONFIG)
    for i, size in enumerate([(64, 48), (64, 48), (32, 32)]):
        Image.new("RGB", size).save(tmp_path / f"f{i}.png")
    with pytest.raises(UserError, match="differ in size"):
        media.load_video(tmp_path, CONFIG)


def test_a_single_frame_is_not_a_video(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "only.png")
    with pytest.raises(UserError, match="at least 2 frames"):
        media.load_video(tmp_path, CONFIG)


def test_frames_are_taken_in_natural_name_order(tmp_path):
    for i in (1, 2, 10):
        Image.new("RGB", (64, 48), (i * 20, 0, 0)).save(tmp_path / f"frame{i}.png")
    assert [p.name for p in media.frame_files(tmp_path)] == ["frame1.png", "frame2.png", "frame10.png"]
    visual = media.load_video(tmp_path, CONFIG)
    assert visual.frames[:3, 0, 0, 0].tolist() == [20, 40, 200]
    assert visual.frames.shape[0] == 4                    # 3 frames, the last repeated


def test_unreadable_video_files_raise_user_errors(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(UserError, match="cannot open the video|no frame"):
        media.load_video(path, CONFIG)


def test_short_memory_caps_the_frame_count(monkeypatch):
    monkeypatch.setattr(media, "available_memory", lambda: 2 * 3 * 128 * 96 * 2)   # room for ~2 frames
    visual = media.load_video(MEDIA / "clip.avi", CONFIG)
    assert visual.grid_thw[0] == 1 and len(visual.timestamps) == 1


def test_huge_pictures_are_refused_when_memory_is_short(tmp_path, monkeypatch):
    Image.new("RGB", (400, 300), (1, 2, 3)).save(tmp_path / "big.png")
    monkeypatch.setattr(media, "available_memory", lambda: 100_000)
    with pytest.raises(UserError, match="more memory than is free"):
        media.open_image(tmp_path / "big.png")


def test_huge_jpegs_decode_at_reduced_scale_when_memory_is_short(tmp_path, monkeypatch):
    Image.new("RGB", (800, 600), (1, 2, 3)).save(tmp_path / "big.jpg")
    monkeypatch.setattr(media, "available_memory", lambda: 800 * 600 * 3 * 4)     # half of what it needs
    image = media.open_image(tmp_path / "big.jpg")
    assert image.size[0] < 800 and image.size[0] >= 200


def test_a_video_shorter_than_its_container_says_is_counted_and_sampled_again():
    clip = MEDIA / "clip.avi"
    assert media.count_frames(clip) == 12
    assert media.decode_sampled(clip, 40, 6.0, 128, 96, CONFIG) is None      # frames 13..39 never come
    visual = media.decode_sampled(clip, 12, 6.0, 128, 96, CONFIG)
    assert visual.grid_thw == (2, 6, 8) and visual.timestamps == [1 / 3, 1.5]
