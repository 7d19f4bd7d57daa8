"""Grounding: boxes read from model replies, mapped to pixels, drawn on the picture."""
import json
import os
import random
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from raxcli import oneshot
from raxcli.box_drawing import label_colour, line_width, text_colour
from raxcli.errors import UserError
from raxcli.grounding import (PixelBox, boxes_for_answer, check_boxes_out, draw_boxes,
                              parse_grounding, save_annotated, to_pixels)
from raxcli.lenient_json import LenientJSONError, read_value

CORPUS = json.loads((Path(__file__).parent / "fixtures" / "grounding_cases.json").read_text("utf-8"))
CASES = CORPUS["cases"]
GRAY = (128, 128, 128)
EXIF_ORIENTATION = 0x0112


def pixel_boxes(text, width, height):
    return [box.as_dict() for box in to_pixels(parse_grounding(text).boxes, width, height)]


# --- reading replies ------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reply_gives_the_expected_pixel_boxes(case):
    width, height = case.get("image_size", CORPUS["image_size"])
    grounding = parse_grounding(case["text"])
    assert [b.as_dict() for b in to_pixels(grounding.boxes, width, height)] == case["boxes"]
    assert len(grounding.unparsed) == case.get("unparsed", 0), grounding.unparsed


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_a_reply_cut_anywhere_keeps_only_boxes_of_the_whole_reply(case):
    # max-tokens can stop a reply at any character: the parser must not raise, and whatever
    # it reads from the cut reply is a leading run of what it reads from the whole reply
    # (a cut list loses its tail; a cut number is never read as a shorter number)
    whole = pixel_boxes(case["text"], 640, 480)
    for cut in range(len(case["text"])):
        part = pixel_boxes(case["text"][:cut], 640, 480)
        assert part == whole[:len(part)], (cut, case["text"][:cut])


def test_every_complete_object_of_a_cut_list_is_kept():
    text = '```json\n[\n' + ",\n".join(
        f'  {{"bbox_2d": [{i}0, {i}0, {i + 1}00, {i + 1}00], "label": "thing {i}"}}' for i in range(1, 6))
    for n_complete in range(1, 6):
        cut = text.index(f'"thing {n_complete}"}}') + len(f'"thing {n_complete}"}}')
        assert [b.label for b in parse_grounding(text[:cut]).boxes] == [f"thing {i}" for i in range(1, n_complete + 1)]
        assert len(parse_grounding(text[:cut - 1]).boxes) == n_complete - 1


def test_random_box_like_text_never_raises():
    pieces = ['{', '}', '[', ']', ',', ':', '"', "'", ' ', '\n', '```json', '"bbox_2d"', 'point_2d',
              '"label"', '12', '-3.5', '1e999', 'true', 'null', 'cat', '\\u', '\\', '<|box_start|>',
              '<|box_end|>', '<|object_ref_start|>', '<|object_ref_end|>', '(', ')', '狗']
    rng = random.Random(1234)
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        grounding = parse_grounding(text)
        for box in to_pixels(grounding.boxes, 64, 48):
            x1, y1, x2, y2 = box.box
            assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 48


def test_deeply_nested_brackets_are_read_without_unbounded_recursion():
    assert parse_grounding("[" * 5000 + "{" * 5000 + "[1, " * 2000).boxes == []


def test_tags_whose_special_tokens_the_decoder_dropped_are_left_as_text():
    # "cat[100, 200, 300, 400]" does not say whether y or x comes first: not guessed at
    assert parse_grounding("cat[100, 200, 300, 400]").boxes == []


@pytest.mark.parametrize("text", [
    '{"a": [1, 2.5, -3e2, "x\\n\\u00e9", true, false, null], "b": {}}',
    '[{"bbox_2d": [1, 2, 3, 4], "label": "\\ud83d\\ude00 smile"}]',
    '"just a string"',
])
def test_lenient_reader_agrees_with_json_on_valid_json(text):
    assert read_value(text) == (json.loads(text), len(text))


@pytest.mark.parametrize("text", ['[1, 2', '{"a": 1', '{"a": "b', '[1, 2 3]', '{a 1}', '[12'])
def test_lenient_reader_refuses_incomplete_or_broken_values(text):
    with pytest.raises(LenientJSONError):
        read_value(text)


# --- the image the boxes refer to -----------------------------------------------------------

def save_with_orientation(path, image, orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    image.save(path, exif=exif)


def test_boxes_are_in_pixels_of_the_image_turned_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    save_with_orientation(path, Image.new("RGB", (200, 100), GRAY), 6)  # shown as 100 wide, 200 tall
    boxes = boxes_for_answer('[{"bbox_2d": [0, 0, 1000, 500], "label": "top half"}]', path)
    assert boxes == [{"label": "top half", "box": [0, 0, 100, 100]}]


def test_an_unreadable_image_is_a_user_error(tmp_path):
    path = tmp_path / "not-an-image.png"
    path.write_bytes(b"hello")
    with pytest.raises(UserError, match="not-an-image.png"):
        boxes_for_answer("[]", path)


# --- drawing ---------------------------------------------------------------------------------

def draw_on_gray(tmp_path, boxes, size=(400, 300)):
    out = tmp_path / "boxes.png"
    draw_boxes(Image.new("RGB", size, GRAY), boxes, out)
    with Image.open(out) as drawn:
        assert drawn.format == "PNG"
        return drawn.convert("RGB").copy()


def band_pixels(image, colour, rows, columns):
    """How many pixels in the region have exactly `colour`."""
    return sum(image.getpixel((x, y)) == colour for y in rows for x in columns)


def ink_pixels(image, ink, band, rows, columns):
    """How many pixels in the region are nearer the text colour than the band's (text is antialiased)."""
    def distance(a, b):
        return sum((p - q) ** 2 for p, q in zip(a, b))
    return sum(distance(image.getpixel((x, y)), ink) < distance(image.getpixel((x, y)), band)
               for y in rows for x in columns)


def test_box_edges_have_the_label_colour_and_the_inside_is_untouched(tmp_path):
    drawn = draw_on_gray(tmp_path, [PixelBox("cat", (100, 100, 300, 250))])
    colour, stroke = label_colour(0), line_width(400, 300)
    assert drawn.size == (400, 300) and drawn.mode == "RGB"
    for edge in [(100, 175), (100 + stroke - 1, 175), (299, 175), (200, 100), (200, 249), (299, 249)]:
        assert drawn.getpixel(edge) == colour, edge
    for inside in [(100 + stroke, 175), (200, 175), (298 - stroke, 240), (200, 100 + stroke)]:
        assert drawn.getpixel(inside) == GRAY, inside
    for outside in [(99, 175), (300, 175), (200, 250), (350, 50), (10, 290)]:
        assert drawn.getpixel(outside) == GRAY, outside


def test_label_sits_on_a_filled_band_above_the_box_in_a_contrasting_colour(tmp_path):
    drawn = draw_on_gray(tmp_path, [PixelBox("cat", (100, 100, 300, 250))])
    colour = label_colour(0)
    band_rows = [y for y in range(0, 100) if drawn.getpixel((101, y)) == colour]
    assert band_rows and max(band_rows) == 99, "the band touches the box's top edge"
    top = min(band_rows)  # the band's top row is padding: band colour end to end
    right = next(x for x in range(100, 400) if drawn.getpixel((x, top)) != colour)
    assert right > 110, "the band is as wide as the label"
    rows, columns = range(top, 100), range(100, right)
    ink = text_colour(colour)
    assert band_pixels(drawn, colour, rows, columns) > 0.5 * len(rows) * len(columns)
    assert ink_pixels(drawn, ink, colour, rows, columns) > 20, "the label's text is drawn"


def test_each_label_has_its_own_colour_and_repeats_keep_it(tmp_path):
    drawn = draw_on_gray(tmp_path, [PixelBox("cat", (20, 60, 120, 160)), PixelBox("dog", (200, 60, 300, 160)),
                                    PixelBox("Cat", (20, 200, 120, 290))])
    assert drawn.getpixel((20, 100)) == drawn.getpixel((20, 250)) == label_colour(0)
    assert drawn.getpixel((200, 100)) == label_colour(1) != label_colour(0)


def test_the_first_labels_get_clearly_different_colours():
    colours = [label_colour(i) for i in range(8)]
    for i in range(8):
        for j in range(i):
            distance = sum((a - b) ** 2 for a, b in zip(colours[i], colours[j])) ** 0.5
            assert distance > 60, (i, j, colours[i], colours[j])


def test_labels_stay_inside_the_image(tmp_path):
    # a box in the top-right corner: no room above, no room to the right of its left edge
    drawn = draw_on_gray(tmp_path, [PixelBox("elephant", (390, 0, 400, 30))])
    colour = label_colour(0)
    band = [(x, y) for y in range(0, 40) for x in range(300, 400) if drawn.getpixel((x, y)) == colour]
    assert min(x for x, _ in band) < 390, "the band is shifted left to fit"
    assert min(y for _, y in band) == 0


def test_a_label_moves_off_a_place_another_label_took(tmp_path):
    drawn = draw_on_gray(tmp_path, [PixelBox("alpha", (10, 50, 150, 100)), PixelBox("beta", (20, 60, 160, 120))])
    assert drawn.getpixel((22, 45)) == label_colour(0), "the first label keeps its place above its box"
    assert drawn.getpixel((30, 66)) == label_colour(1), "the second hangs inside its own box instead"


def test_a_label_too_wide_for_the_image_is_shortened(tmp_path):
    drawn = draw_on_gray(tmp_path, [PixelBox("a very long label " * 20, (10, 40, 90, 90))], size=(100, 100))
    colour = label_colour(0)
    assert drawn.getpixel((1, 30)) == colour or drawn.getpixel((5, 30)) == colour
    assert drawn.getpixel((95, 45)) == GRAY, "nothing drawn right of the box row but the band"


def test_a_point_is_drawn_as_a_dot_in_its_label_colour(tmp_path):
    drawn = draw_on_gray(tmp_path, [PixelBox("eye", (200, 150, 200, 150), (200, 150))])
    assert drawn.getpixel((200, 150)) == label_colour(0)
    assert drawn.getpixel((230, 150)) == GRAY


def test_an_exif_rotated_photo_is_drawn_in_its_upright_frame(tmp_path):
    raw = Image.new("RGB", (60, 40), GRAY)
    raw.paste((255, 0, 0), (0, 0, 10, 10))  # a red mark in the stored top-left corner
    source = tmp_path / "photo.jpg"
    save_with_orientation(source, raw, 6)  # "rotate 90° clockwise to show"
    out = tmp_path / "out.png"
    boxes = boxes_for_answer('[{"bbox_2d": [125, 250, 875, 750], "label": ""}]', source)
    assert boxes == [{"label": "", "box": [5, 15, 35, 45]}]
    save_annotated(source, boxes, out)
    with Image.open(out) as drawn:
        drawn = drawn.convert("RGB")
        assert drawn.size == (40, 60)
        red = drawn.getpixel((36, 3))  # the stored top-left corner is now top-right
        assert red[0] > 200 and red[1] < 60 and red[2] < 60
        assert drawn.getpixel((5, 30)) == label_colour(0)
        with Image.open(source) as original:
            upright = ImageOps.exif_transpose(original).convert("RGB")
        assert drawn.getpixel((20, 30)) == upright.getpixel((20, 30)), "inside the box is the photo"


@pytest.mark.parametrize("mode, fill, expected", [
    ("RGBA", (10, 20, 30, 0), (255, 255, 255)),  # transparent → the white the model sees
    ("LA", (0, 255), (0, 0, 0)),
    ("P", 0, (0, 0, 0)),
    ("L", 200, (200, 200, 200)),
    ("I;16", 65535, (255, 255, 255)),            # 16-bit samples scaled to 8 bits
])
def test_any_image_mode_is_drawn_on_an_rgb_copy(tmp_path, mode, fill, expected):
    source = tmp_path / "in.png"
    Image.new(mode, (50, 40), fill).save(source)
    out = tmp_path / "out.png"
    save_annotated(source, [{"label": "x", "box": [10, 10, 40, 30]}], out)
    with Image.open(out) as drawn:
        assert drawn.mode == "RGB" and drawn.size == (50, 40)
        assert drawn.getpixel((25, 20)) == expected


def test_the_png_replaces_an_old_file_atomically_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "boxes.png"
    out.write_bytes(b"old contents")
    draw_boxes(Image.new("RGB", (30, 20), GRAY), [], out)
    with Image.open(out) as drawn:
        drawn.verify()
    assert os.listdir(tmp_path) == ["boxes.png"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(OSError):
        draw_boxes(Image.new("RGB", (30, 20), GRAY), [], tmp_path / "missing" / "boxes.png")
    assert os.listdir(tmp_path) == []


# --- rax run -------------------------------------------------------------------------------

def test_boxes_out_path_is_checked_before_the_model_runs(tmp_path):
    with pytest.raises(UserError, match=r"\.png"):
        check_boxes_out(tmp_path / "boxes.jpg")
    with pytest.raises(UserError, match="no such directory"):
        check_boxes_out(tmp_path / "missing" / "boxes.png")
    with pytest.raises(UserError, match="--image"):
        oneshot.check_request(oneshot.Request(boxes_out=str(tmp_path / "boxes.png")))


def test_run_reports_boxes_of_the_first_image_and_draws_them(tmp_path, capsys):
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    Image.new("RGB", (320, 200), GRAY).save(first)
    Image.new("RGB", (50, 50), GRAY).save(second)
    out = tmp_path / "drawn.png"
    request = oneshot.Request(images=[str(first), str(second)], boxes_out=str(out))
    answer = 'The dog: ```json\n[{"bbox_2d": [250, 500, 750, 1000], "label": "dog"}]\n```'
    import sys
    boxes = oneshot.boxes_named(request, answer, sys.stderr)
    assert boxes == [{"label": "dog", "box": [80, 100, 240, 200]}]
    with Image.open(out) as drawn:
        assert drawn.size == (320, 200) and drawn.convert("RGB").getpixel((80, 150)) == label_colour(0)
    assert "1 box drawn on" in capsys.readouterr().err
    assert oneshot.boxes_named(oneshot.Request(), answer, sys.stderr) == []


def test_boxes_out_without_an_image_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner
    from raxcli.cli import app
    result = CliRunner().invoke(app, ["run", "--prompt", "hi", "--boxes-out", str(tmp_path / "b.png")])
    assert result.exit_code == 2
    assert "--boxes-out" in result.output and "Traceback" not in result.output
