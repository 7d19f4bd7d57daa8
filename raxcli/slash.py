"""The chat's slash commands: /image, /video, /think, /budget, /system, /clear, /save,
/load, /stats, /info, /help, /exit."""
from __future__ import annotations

import shlex
from pathlib import Path

from rich.text import Text

from . import render, system
from .attachments import kind_of, resolve
from .conversation import Conversation
from .errors import UserError

HELP = """\
/image PATH…      attach pictures to your next message (or type/drop a path into it)
/video PATH       attach a video file or a folder of frames
/think on|off     let the model think before answering, or not
/think show|hide  keep the thinking on screen, or fold it to one line
/budget N         stop thinking after N tokens
/system TEXT      set the system message (the chat is read again with it)
/clear            start a new conversation
/save FILE        save the conversation as JSON (pictures by path)
/load FILE        continue a saved conversation
/stats            figures of the last answer and of the conversation
/info             the model, the machine and the limits
/help             this list
/exit             leave (or Ctrl-D)
Enter sends; Alt-Enter (or Esc then Enter) starts a new line; text between \"\"\" lines is one message.
Ctrl-C stops an answer (the conversation keeps what was said)."""


class SlashCommands:
    """Mixed into the REPL: each /name is a method cmd_name(rest)."""

    def command(self, line: str) -> bool:
        """Run a slash command; False when the chat should end."""
        name, _, rest = line.partition(" ")
        name, rest = name.lower(), rest.strip()
        handler = {
            "/image": self.cmd_image, "/video": self.cmd_video, "/think": self.cmd_think,
            "/budget": self.cmd_budget, "/system": self.cmd_system, "/clear": self.cmd_clear,
            "/save": self.cmd_save, "/load": self.cmd_load, "/stats": self.cmd_stats,
            "/info": self.cmd_info, "/help": self.cmd_help,
        }.get(name)
        if name in ("/exit", "/quit", "/bye"):
            return False
        if handler is None:
            self.say(f"unknown command {name}; /help lists them", "red")
            return True
        handler(rest)
        return True

    def _need_vision(self) -> bool:
        if self.session.vision is None:
            self.say(self.vision_note or "pictures are off", "red")
            return False
        return True

    def cmd_image(self, rest: str) -> None:
        if not rest:
            raise UserError("/image PATH… names one or more pictures")
        if not self._need_vision():
            return
        for path in _paths(rest):
            if kind_of(path) == "video":
                raise UserError(f"{path}: a video; use /video")
            try:
                render.open_upright(path)
            except Exception as exc:   # Pillow raises many types for an unreadable picture
                raise UserError(f"{path}: cannot read the picture: {exc}") from None
            self.pending.append(("image", path))
            self.preview("image", path)
        self.say(f"{len(self.pending)} attached to your next message")

    def cmd_video(self, rest: str) -> None:
        if not rest:
            raise UserError("/video PATH names a video file or a folder of frames")
        if self.remote:
            raise UserError("videos cannot be sent to a server (OpenAI's chat API has no video part)")
        if not self._need_vision():
            return
        path = resolve(rest) or (Path(rest).expanduser().resolve() if Path(rest).expanduser().is_dir() else None)
        if path is None:
            raise UserError(f"{rest}: no such file or folder")
        self.pending.append(("video", path))
        self.preview("video", path)
        self.say("attached to your next message")

    def cmd_think(self, rest: str) -> None:
        o = self.session.options
        word = rest.lower()
        if word in ("on", "off"):
            o.thinking = word == "on"
        elif word in ("show", "hide"):
            self.show_thinking = word == "show"
        elif word:
            raise UserError("/think on|off|show|hide")
        budget = "the server's default" if o.think_budget is None else f"{o.think_budget} tokens"
        self.say(f"thinking {'on' if o.thinking else 'off'}, {'shown' if self.show_thinking else 'folded'}"
                 f", budget {budget}")

    def cmd_budget(self, rest: str) -> None:
        if self.limits is None:       # a server: its memory, not this machine's, sets the cap
            if not rest.isdigit() or int(rest) < 1:
                raise UserError("/budget N with N a whole number of tokens")
            self.session.options.think_budget = int(rest)
            self.say(f"thinking budget {int(rest)} tokens")
            return
        if not rest.isdigit() or int(rest) < 1:
            raise UserError(f"/budget N with N a whole number of tokens, 1 to {self.limits.think_cap}")
        fitted = system.fit(int(rest), self.limits.think_budget, self.limits.think_cap, "thinking", "/budget")
        if fitted.warning:
            self.warn(f"warning: {fitted.warning}")
        self.session.options.think_budget = fitted.value
        self.say(f"thinking budget {fitted.value} tokens")

    def cmd_system(self, rest: str) -> None:
        if not rest:
            current = self.session.conversation.system
            self.say(f"system message: {current!r}" if current else "no system message; /system TEXT sets one")
            return
        self.session.set_system(rest)
        self.say("system message set; the conversation is read again with it at your next message")

    def cmd_clear(self, rest: str) -> None:
        self.session.clear()
        self.pending = []
        self.chat_file = self._new_chat_file()
        self.say("new conversation")

    def cmd_save(self, rest: str) -> None:
        if not rest:
            raise UserError(f"/save FILE (this chat is also kept in {self.chat_file})")
        path = self.session.conversation.save(_one_path(rest))
        self.say(f"saved {self.session.conversation.turns} turns to {path}", "green")

    def cmd_load(self, rest: str) -> None:
        if not rest:
            raise UserError("/load FILE names a conversation saved with /save")
        conversation = Conversation.load(_one_path(rest))
        for message in conversation.messages:
            for attr in ("images", "videos"):
                kept = []
                for p in getattr(message, attr):
                    if attr == "videos" and self.remote:
                        self.warn(f"{p}: videos cannot be sent to a server, left out")
                    elif self.session.vision is None:
                        self.warn(f"{p}: pictures are off, left out")
                    elif not Path(p).exists():
                        self.warn(f"{p}: no longer there, left out")
                    else:
                        kept.append(p)
                setattr(message, attr, kept)
        self.session.replace_conversation(conversation)
        self.pending = []
        self.show_transcript()
        self.say(f"loaded {conversation.turns} turns; your next message continues it (the model reads it again first)",
                 "green")

    def show_transcript(self) -> None:
        from rich.markdown import Markdown
        conv = self.session.conversation
        if conv.system:
            self.say(f"system: {conv.system}")
        for m in conv.messages:
            if m.role == "user":
                media = [Path(p).name for p in m.images + m.videos]
                self.console.print(Text(">>> " + m.text + (f"  [{', '.join(media)}]" if media else ""), style="bold"))
            else:
                if m.thinking:
                    self.say(f"▸ thought ({len(m.thinking)} characters)")
                self.console.print(Markdown(m.text or "_(no answer)_"))

    def cmd_stats(self, rest: str) -> None:
        s = self.session
        st = s.last_stats
        if st:
            self.console.print(render.footer(st))
        if self.remote:
            context = f" of {s.options.max_context}" if s.options.max_context else ""
            self.say(f"conversation: {s.conversation.turns} turns, {s.context_used}{context} tokens of context "
                     f"(as {s.backend.url} counted the last turn); each turn sends the whole conversation")
            return
        from .bench import peak_rss_mb
        self.say(f"conversation: {s.conversation.turns} turns, {s.context_used} of {s.options.max_context} "
                 f"tokens of context; model state {s.state.nbytes() / 2**20:.1f} MB; "
                 f"peak memory {peak_rss_mb():.0f} MB; model loaded in {s.loaded.load_s:.2f} s")

    def cmd_info(self, rest: str) -> None:
        if self.remote:
            return self.remote_info()
        from .info import describe
        info = describe(self.session.loaded.path)
        types = ", ".join(f"{k} {v:.0%}" for k, v in info["tensor_types"].items())
        self.say(f"model: {info['file']} ({info.get('architecture')}, {info['parameters'] / 1e6:.1f} M parameters, {types})")
        if "layer_pattern" in info:
            self.say(f"layers: {info['layers']} ({info['layer_pattern']}; D = DeltaNet, A = attention), "
                     f"trained context {info['context_length']}")
        self.say(f"pictures: {self.session.mmproj or (self.vision_note or 'off')}")
        self.say(f"machine: {system.describe_machine(self.machine, self.threads)}; tier {self.limits.tier}: "
                 f"{self.limits.describe()}")
        o = self.session.options
        self.say(f"now: answer {o.max_tokens}, think {'on' if o.thinking else 'off'} (budget {o.think_budget}), "
                 f"context {o.max_context} tokens; chat kept in {self.chat_file}")

    def remote_info(self) -> None:
        """What the server says of its model now (asked again: this also shows it still answers)."""
        s = self.session
        card = s.backend.model_card()
        told = ", ".join(f"{k} {v}" for k, v in card.items()
                         if k not in ("id", "object", "created") and v is not None and not isinstance(v, (dict, list)))
        self.say(f"server: {s.backend.url}")
        self.say(f"model: {card.get('id', s.backend.model)}" + (f" ({told})" if told else ""))
        self.say(f"pictures: {s.mmproj or self.vision_note}")
        self.say(f"now: thinking {'on' if s.options.thinking else 'off'}; {self.describe_options()}; "
                 f"chat kept in {self.chat_file}")

    def cmd_help(self, rest: str) -> None:
        self.console.print(Text(HELP))


def _paths(rest: str) -> list[Path]:
    """Paths after /image: quoted or escaped as a shell would, or the whole rest as one."""
    whole = resolve(rest)
    if whole is not None:
        return [whole]
    try:
        words = shlex.split(rest)
    except ValueError:
        words = [rest]
    paths = []
    for word in words:
        path = resolve(word)
        if path is None:
            raise UserError(f"{word}: no such file")
        paths.append(path)
    return paths


def _one_path(rest: str) -> Path:
    try:
        words = shlex.split(rest)
    except ValueError:
        words = [rest]
    return Path(words[0] if len(words) == 1 else rest).expanduser()


def first_frame(path: Path):
    """The first picture of a video file or frame folder, for the preview (None if unreadable)."""
    from PIL import Image
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if kind_of(p) == "image")
        return render.open_upright(frames[0]) if frames else None
    try:
        import cv2
        capture = cv2.VideoCapture(str(path))
        ok, frame = capture.read()
        capture.release()
    except Exception:  # OpenCV missing or the container unreadable: no preview, not an error
        return None
    return Image.fromarray(frame[:, :, ::-1]) if ok else None
