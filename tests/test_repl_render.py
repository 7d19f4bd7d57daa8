"""What `rax chat` draws: pictures as half-block cells with boxes and labels, the streamed
answer with its thinking and footer, boxes found in an answer drawn and saved next to the
chat, and Ctrl-C turned into a stop flag while the model works."""
import io
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from rich.console import Console

from raxcli import render
from raxcli.conversation import Conversation, Message
from raxcli.generate import Step
from raxcli.repl import Repl, StopFlag

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PICTURE = Path(__file__).parent / "fixtures" / "vision" / "media" / "square.png"


def cells(text):
    """[(character, foreground rgb, background rgb)] per row of a drawn picture."""
    rows, row = [], []
    for span_text, style in _chars(text):
        if span_text == "\n":
            rows.append(row)
            row = []
        else:
            fg = style.color.get_truecolor() if style.color else None
            bg = style.bgcolor.get_truecolor() if style.bgcolor else None
            row.append((span_text, tuple(fg) if fg else None, tuple(bg) if bg else None))
    rows.append(row)
    return rows


def _chars(text):
    styles = [None] * len(text.plain)
    for span in text.spans:
        for i in range(span.start, span.end):
            styles[i] = span.style
    return zip(text.plain, styles)


def test_picture_is_drawn_two_pixels_per_cell_in_true_colour():
    image = Image.new("RGB", (8, 4))
    image.paste((255, 0, 0), (0, 0, 8, 1))      # top row red, then blue rows
    image.paste((0, 0, 255), (0, 1, 8, 4))
    rows = cells(render.picture(image, max_cols=8, max_rows=10))
    assert len(rows) == 2 and all(len(r) == 8 for r in rows)
    assert rows[0][0] == ("▀", (255, 0, 0), (0, 0, 255))
    assert rows[1][3] == ("▀", (0, 0, 255), (0, 0, 255))


def test_picture_fits_the_terminal_and_keeps_its_shape():
    assert render.preview_size(1000, 500, 80, 40) == (80, 40)        # 80 × 40 pixels = 80 × 20 cells
    cols, rows = render.preview_size(500, 1000, 80, 20)
    assert rows == 40 and cols == 20
    assert render.preview_size(10, 10, 80, 40) == (10, 10)          # small pictures are not blown up


def test_boxes_are_outlined_in_their_label_colour_with_the_label_on_the_top_edge():
    from raxcli.box_drawing import label_colour
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    boxes = [{"label": "cat", "box": [20, 20, 120, 80]}, {"label": "dog", "box": [130, 40, 190, 90]}]
    rows = cells(render.picture(image, boxes, max_cols=100, max_rows=50))
    cat, dog = label_colour(0), label_colour(1)
    text = ["".join(c for c, _, _ in row) for row in rows]
    assert " cat " in text[5] and " dog " in text[10]                # row = top edge y / 2 in cells
    chip = [c for c in rows[5] if c[0] in "cat"]
    assert all(bg == cat for _, _, bg in chip)
    left_edge = [rows[r][10] for r in range(6, 20)]                    # x1 = 20 px → column 10
    assert all(cat in (fg, bg) for _, fg, bg in left_edge)
    assert any(dog in (fg, bg) for row in rows for _, fg, bg in row)
    assert len(rows) == 25 and rows[22][50] == ("▀", (255, 255, 255), (255, 255, 255))   # outside any box


def test_answer_streams_with_thinking_folded_and_a_footer():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    view = render.TurnView(console, show_thinking=False)
    with view:
        for step in [Step(1, "weighing it", True), Step(2, "", True), Step(3, "\n\nThe answer", False),
                     Step(4, " is 4.", False)]:
            view.step(step)
    stats = {"prompt_tokens": 12, "generated_tokens": 4, "ttft_s": 0.25, "decode_tok_s": 9.5,
             "context_used": 18, "context": 4096, "finish_reason": "stop"}
    view.finish(stats)
    text = out.getvalue()
    assert text.startswith("The answer is 4.\n") and "weighing" not in text
    assert "12 prompt · 4 answer tokens · first token 0.25 s · 9.5 tok/s · context 18/4096" in text


def test_live_view_folds_the_thinking_to_one_line_and_can_keep_it():
    for show, expect_panel in ((False, False), (True, True)):
        out = io.StringIO()
        console = Console(file=out, width=60, height=20, force_terminal=True, color_system=None)
        view = render.TurnView(console, show_thinking=show)
        with view:
            view.step(Step(1, "a careful thought", True))
            view.step(Step(2, "Done.", False))
        view.finish(None)
        final = out.getvalue().rsplit("\x1b[2K", 1)[-1]     # what stays after the live area is cleared
        assert "Done." in final
        assert ("a careful thought" in final) is expect_panel
        assert ("thought for 1 tokens" in final) is not expect_panel


@pytest.mark.skipif(not PICTURE.exists(), reason="vision fixture absent")
def test_boxes_in_an_answer_are_drawn_on_the_picture_and_saved_next_to_the_chat(tmp_path):
    pytest.importorskip("raxcli.grounding")
    conversation = Conversation(messages=[
        Message("user", "Where is the square?", images=[str(PICTURE)]),
        Message("assistant", 'Here:\n```json\n[{"bbox_2d": [250, 250, 750, 750], "label": "square"}]\n```')])
    session = SimpleNamespace(conversation=conversation)
    out = io.StringIO()
    console = Console(file=out, width=200, height=40, force_terminal=True, color_system="truecolor",
                      highlight=False)
    repl = Repl(console, session, machine=None, limits=None, threads=1, show_thinking=False, chat_dir=tmp_path)
    repl.after_answer()
    assert conversation.messages[-1].boxes == [{"label": "square", "box": [24, 24, 72, 72]}]
    saved = tmp_path / f"{repl.chat_file.stem}-turn1-boxes.png"
    shown = ANSI.sub("", out.getvalue())
    assert saved.exists() and f"boxes drawn on the full picture: {saved}" in shown
    assert " square " in shown and "■ square [24, 24, 72, 72]" in shown   # label chip and legend
    assert Image.open(saved).size == (96, 96)
    assert repl.chat_file.exists()                                     # the chat itself is kept


def test_ctrl_c_while_the_model_works_only_sets_the_stop_flag():
    before = signal.getsignal(signal.SIGINT)
    with StopFlag() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop()
    assert signal.getsignal(signal.SIGINT) is before
