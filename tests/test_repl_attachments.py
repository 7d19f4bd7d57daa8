"""Paths typed or dropped into a chat message, found as Ollama finds them."""
from pathlib import Path

import pytest
from PIL import Image

from raxcli.attachments import find_media


@pytest.fixture
def pictures(tmp_path):
    (tmp_path / "my photos").mkdir()
    for name in ("cat.png", "my photos/beach day.JPG"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    return tmp_path


@pytest.mark.parametrize("message, text, found", [
    ("what is in cat.png?", "what is in?", ["cat.png"]),                        # relative, bare
    ("look at {root}/my photos/beach day.JPG please", "look at please", ["my photos/beach day.JPG"]),
    ("'{root}/my photos/beach day.JPG' and cat.png", "and", ["my photos/beach day.JPG", "cat.png"]),
    ('"{root}/cat.png"', "", ["cat.png"]),                                      # quoted, nothing else
    (r"{root}/my\ photos/beach\ day.JPG", "", ["my photos/beach day.JPG"]),     # a terminal's escaped drop
    ("file://{root}/my%20photos/beach%20day.JPG x", "x", ["my photos/beach day.JPG"]),
    ("summarise clip.mp4", "summarise", ["clip.mp4"]),
    ("no.png is not here", "no.png is not here", []),                           # must exist
    ("cat.pngs or cat.png.bak", "cat.pngs or cat.png.bak", []),                 # whole extension only
])
def test_paths_in_a_message_are_attached_and_taken_out(pictures, message, text, found):
    got_text, media = find_media(message.format(root=pictures), cwd=pictures)
    assert got_text == text
    assert [p.relative_to(pictures).as_posix() for _, p in media] == found
    kinds = [k for k, _ in media]
    assert kinds == ["video" if name.endswith(".mp4") else "image" for name in found]
