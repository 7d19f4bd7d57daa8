"""Terminal drawing for `rax chat`: the streamed answer, the thinking panel, the stats
footer, and pictures as half-block cells with the model's boxes drawn on them."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.segment import Segment
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.color import Color
from rich.style import Style
from rich.text import Text

UPPER_HALF = "▀"


def make_console(file=None) -> Console:
    """A console on stdout; Rich itself drops colour under NO_COLOR and cursor tricks when
    the output is not a terminal."""
    return Console(file=file or sys.stdout, highlight=False, soft_wrap=False)


def plain(console: Console) -> bool:
    """No live redrawing: output is a file or a pipe, or the terminal cannot move the cursor."""
    return not console.is_terminal or console.is_dumb_terminal


def can_draw_pictures(console: Console) -> bool:
    return not plain(console) and console.color_system is not None and not os.environ.get("NO_COLOR")


class _Tail:
    """Shows only the last lines of a renderable, so a long answer streams in place."""

    def __init__(self, renderable, lines: int):
        self.renderable, self.lines = renderable, lines

    def __rich_console__(self, console, options):
        rendered = console.render_lines(self.renderable, options, pad=False)
        for line in rendered[-self.lines:]:
            yield from line
            yield Segment.line()


class TurnView:
    """One answer as it arrives: prompt progress, thinking in a dim panel (collapsed to one
    line once the answer starts, unless `show_thinking`), the answer as Markdown, and a
    one-line footer with the figures when it ends."""

    def __init__(self, console: Console, show_thinking: bool = False):
        self.console = console
        self.show_thinking = show_thinking
        self.thinking = ""
        self.answer = ""
        self.thinking_tokens = 0
        self.answer_tokens = 0
        self.thinking_started: float | None = None
        self.thinking_s = 0.0
        self.progress: Progress | None = None
        self.live: Live | None = None
        self.plain = plain(console)
        self._plain_started = False
        self._ids_seen = False

    # -- lifetime -----------------------------------------------------------------
    def __enter__(self) -> "TurnView":
        if not self.plain:
            # Live draws this object on its own thread, 8 times a second: the Markdown is
            # parsed per frame, not per token, so drawing does not slow the model down
            self.live = Live(self, console=self.console, refresh_per_second=8, transient=True,
                             vertical_overflow="visible")
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    # -- updates ------------------------------------------------------------------
    def prefill_progress(self, done: int, total: int) -> None:
        """Reading the prompt, shown as a bar with its rate when it takes more than one chunk."""
        if self.plain:
            return
        if self.progress is None:
            if done >= total or total < 256:    # short prompts are read before a bar would help
                return
            self.progress = Progress(TextColumn("[dim]reading the prompt"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("[dim]{task.completed}/{task.total} tokens · {task.fields[speed_text]}"),
                                     TimeRemainingColumn(), console=self.console, auto_refresh=False)
            self.progress.add_task("prompt", total=total, speed_text="")
        task = self.progress.tasks[0]
        speed = task.speed
        self.progress.update(task.id, completed=done, speed_text=f"{speed:.0f} tok/s" if speed else "")
        if done >= total:
            self.progress = None

    def step(self, step) -> None:
        # a server that sends no token ids streams about one token per piece: count pieces
        counted = step.token_id is not None or (not self._ids_seen and bool(step.text) and step.finish_reason is None)
        self._ids_seen = self._ids_seen or step.token_id is not None
        if counted:
            if step.thinking:
                self.thinking_tokens += 1
            else:
                self.answer_tokens += 1
        if not step.text:
            return
        if step.thinking:
            self.thinking += step.text
            if self.thinking_started is None:
                self.thinking_started = time.perf_counter()
                if self.live is not None:
                    self.live.refresh()     # the panel at once, not at the next frame: a fast model thinks in less
        else:
            if not self.answer and self.thinking_started is not None:
                self.thinking_s = time.perf_counter() - self.thinking_started
            text = step.text if self.answer else step.text.lstrip("\n")
            self.answer += text
            if self.plain and text:
                self.console.file.write(text)
                self.console.file.flush()
                self._plain_started = True
        if self.plain and step.thinking and self.show_thinking:
            self.console.file.write(step.text)
            self.console.file.flush()

    # -- what is drawn --------------------------------------------------------------
    def _thinking_line(self) -> Text:
        seconds = self.thinking_s or (time.perf_counter() - self.thinking_started if self.thinking_started else 0)
        return Text(f"▸ thought for {self.thinking_tokens} tokens ({seconds:.1f} s)", style="dim italic")

    def _thinking_panel(self, tail_lines: int | None) -> Panel:
        body = Text(self.thinking.strip("\n"), style="dim")
        title = f"thinking · {self.thinking_tokens} tokens"
        content = _Tail(body, tail_lines) if tail_lines else body
        return Panel(content, title=title, title_align="left", border_style="dim", style="dim")

    def __rich_console__(self, console, options):
        yield self._view()

    def _view(self):
        """What the live area shows; kept shorter than the terminal, or Live cannot redraw it."""
        parts = []
        room = max(6, self.console.height - 3)
        progress = self.progress          # read once: the drawing thread may see it go
        if progress is not None:
            parts.append(progress.get_renderable())
            room -= 1
        if self.thinking.strip():
            if not self.answer:
                lines = min(8, room - 2)
                parts.append(self._thinking_panel(lines))
                room -= lines + 2
            elif self.show_thinking:
                parts.append(self._thinking_panel(3))
                room -= 5
            else:
                parts.append(self._thinking_line())
                room -= 1
        if self.answer:
            parts.append(_Tail(Markdown(self.answer), max(1, room)))
        return Group(*parts)

    def finish(self, stats: dict | None, note: str | None = None) -> None:
        """Leave the whole answer on screen, then the footer (or why the turn ended)."""
        self.__exit__()
        if self.plain:
            if self._plain_started:
                self.console.file.write("\n")
        else:
            if self.thinking.strip():
                self.console.print(self._thinking_panel(None) if self.show_thinking else self._thinking_line())
            if self.answer.strip():
                self.console.print(Markdown(self.answer))
        if note:
            self.console.print(Text(note, style="yellow"))
        if stats:
            self.console.print(footer(stats), style="dim")


def footer(stats: dict) -> Text:
    parts = [f"{stats['prompt_tokens']} prompt", f"{stats['generated_tokens']} answer tokens"]
    if stats.get("vision_s"):
        parts.append(f"vision {stats['vision_s']:.1f} s")
    if stats.get("ttft_s") is not None:
        parts.append(f"first token {stats['ttft_s']:.2f} s")
    if stats.get("decode_tok_s"):
        parts.append(f"{stats['decode_tok_s']:.1f} tok/s")
    if stats.get("context"):
        parts.append(f"context {stats['context_used']}/{stats['context']}")
    ending = {"length": " · hit max tokens", "interrupted": " · stopped (Ctrl-C)",
              "cut": " · the server ended the answer early"}
    return Text(" · ".join(parts) + ending.get(stats.get("finish_reason"), ""))


# -- pictures ------------------------------------------------------------------------
def _label_colours(labels):
    try:
        from .box_drawing import label_colour
    except ImportError:   # grounding not installed in this build: a fixed palette
        palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
        label_colour = lambda i: palette[i % len(palette)]  # noqa: E731
    colours: dict[str, tuple[int, int, int]] = {}
    for label in labels:
        colours.setdefault(label.casefold(), label_colour(len(colours)))
    return colours


def _ink(background: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        from .box_drawing import text_colour
        return text_colour(background)
    except ImportError:
        r, g, b = background
        return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def open_upright(path):
    """The picture as the model sees it: EXIF orientation applied, RGB on white."""
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")


def preview_size(width: int, height: int, max_cols: int, max_rows: int) -> tuple[int, int]:
    """(columns, pixel rows) of a preview within max_cols × max_rows cells, aspect kept
    (a cell is one pixel wide and two tall, and about twice as tall as wide on screen)."""
    scale = min(max_cols / width, (2 * max_rows) / height, 1.0 if width >= 8 else 8 / width)
    cols = max(1, round(width * scale))
    rows = max(2, round(height * scale))
    return cols, rows + (rows % 2)


def picture(image, boxes: list[dict] | None = None, max_cols: int = 80, max_rows: int = 24) -> Text:
    """The image as rows of '▀' cells (top pixel in the foreground colour, bottom pixel in the
    background), true colour; boxes are outlined in their label's colour with the label
    written on the top edge."""
    from PIL import Image, ImageDraw
    if not isinstance(image, Image.Image):
        image = open_upright(image)
    width, height = image.size
    cols, rows = preview_size(width, height, max_cols, max_rows)
    small = image.resize((cols, rows), Image.Resampling.BOX if hasattr(Image, "Resampling") else Image.BOX)
    boxes = boxes or []
    colours = _label_colours(b.get("label", "") for b in boxes)
    sx, sy = cols / width, rows / height
    draw = ImageDraw.Draw(small)
    chips = []     # (cell row, first column, text, colour)
    for b in boxes:
        x1, y1, x2, y2 = b["box"]
        colour = colours[b.get("label", "").casefold()]
        left, top = int(x1 * sx), int(y1 * sy)
        right, bottom = max(left, min(cols - 1, int(x2 * sx))), max(top, min(rows - 1, int(y2 * sy)))
        draw.rectangle([left, top, right, bottom], outline=colour, width=1)
        if b.get("label"):
            room = max(1, min(cols - left, right - left + 1))
            chips.append((top // 2, left, f" {b['label']} "[:room], colour))
    pixels = small.load()
    cells = [[(UPPER_HALF, Style(color=_rgb(pixels[x, 2 * r]), bgcolor=_rgb(pixels[x, 2 * r + 1])))
              for x in range(cols)] for r in range(rows // 2)]
    for row, left, label, colour in chips:
        chip = Style(color=_rgb(_ink(colour)), bgcolor=_rgb(colour), bold=True)
        for i, ch in enumerate(label):
            if left + i < cols:
                cells[row][left + i] = (ch, chip)
    out = Text()
    for r, line in enumerate(cells):
        for ch, style in line:
            out.append(ch, style)
        if r < len(cells) - 1:
            out.append("\n")
    return out


def _rgb(pixel) -> Color:
    return Color.from_rgb(*pixel[:3])


def legend(boxes: list[dict]) -> Text:
    colours = _label_colours(b.get("label", "") for b in boxes)
    out = Text()
    for i, b in enumerate(boxes):
        if i:
            out.append("  ")
        colour = colours[b.get("label", "").casefold()]
        out.append("■ ", Style(color=_rgb(colour)))
        out.append(f"{b.get('label') or 'box'} {list(b['box'])}")
    return out


def show_picture(console: Console, path, boxes: list[dict] | None = None, caption: str | None = None) -> None:
    """Draw the picture sized to the terminal, or name it where pictures cannot be drawn."""
    from PIL import Image
    if isinstance(path, Image.Image):     # a frame already decoded (video previews)
        image, name = path, "picture"
    else:
        name = Path(path).name
        try:
            image = open_upright(path)
        except Exception as exc:   # Pillow raises many types for a bad file
            console.print(Text(f"cannot show {path}: {exc}", style="yellow"))
            return
    label = caption or f"{name} · {image.width}×{image.height}"
    if can_draw_pictures(console):
        max_cols = max(8, min(console.width - 2, 100))
        max_rows = max(4, min(int(console.height * 0.6), 40))
        console.print(picture(image, boxes, max_cols, max_rows), soft_wrap=True)
    else:
        label = f"[picture: {label}]"
    console.print(Text(label, style="dim"))
    if boxes:
        console.print(legend(boxes))


class busy:
    """A spinner with the elapsed time for work that may take a while (loading, the first
    run's kernel compilation, encoding a picture); nothing is drawn on a plain output."""

    def __init__(self, console: Console, what: str):
        self.console, self.what = console, what
        self.progress: Progress | None = None

    def __enter__(self) -> "busy":
        if not plain(self.console):
            from rich.progress import SpinnerColumn, TimeElapsedColumn
            self.progress = Progress(SpinnerColumn(), TextColumn(self.what), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.add_task(self.what, total=None)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def spinner_until_first(steps, what: str):
    """Yield from `steps`, with a spinner on stderr until the first one arrives (the prompt
    is being read, or the first run compiles the kernels)."""
    console = Console(stderr=True)
    iterator = iter(steps)
    with busy(console, what):
        first = next(iterator, None)
    if first is not None:
        yield first
        yield from iterator
