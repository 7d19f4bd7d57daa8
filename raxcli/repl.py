"""`rax chat`: read a message, stream the answer, repeat — with slash commands, input
history, pictures, and Ctrl-C that stops an answer without losing the conversation."""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text

from . import render, system
from .attachments import find_media
from .conversation import Message
from .errors import UserError
from .line_input import LineInput
from .session import ChatOptions, PromptInterrupted
from .slash import SlashCommands, first_frame


@dataclass
class ChatArgs:
    model: str | None = None
    mmproj: str | None = None
    system: str | None = None
    thinking: bool = True
    think_budget: int | None = None
    show_think: bool = False
    max_tokens: int | None = None
    max_context: int | None = None
    threads: int | None = None
    device: str = "cpu"             # or "gpu": the CuPy engine (engine/gpu)
    ram_gb: float | None = None
    greedy: bool = False
    sampling: dict = field(default_factory=dict)
    chat_dir: str | None = None
    server: str | None = None       # answers come from this OpenAI-compatible server
    api_key: str | None = None


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rax"


class StopFlag:
    """Ctrl-C while the model works sets a flag the generator checks between tokens, so the
    state stays consistent with what was fed; outside that window Ctrl-C acts as usual."""

    def __init__(self):
        self.set = False
        self._previous = None
        self._termios = None

    def __call__(self) -> bool:
        return self.set

    def __enter__(self) -> "StopFlag":
        self.set = False
        self._previous = signal.signal(signal.SIGINT, self._handle)
        self._quiet_terminal()
        return self

    def _handle(self, signum, frame) -> None:
        self.set = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)
        if self._termios is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._termios)
            self._termios = None

    def _quiet_terminal(self) -> None:
        """No echo while the answer is drawn: a "^C" or typed-ahead text would shift the
        lines the live display redraws."""
        try:
            import termios
            fd = sys.stdin.fileno()
            if not os.isatty(fd):
                return
            self._termios = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        except (ImportError, OSError, ValueError):
            self._termios = None


# -- start-up -------------------------------------------------------------------------
def start(args: ChatArgs) -> int:
    console = render.make_console()
    if args.server:
        return start_remote(console, args)
    from .loader import find_model, load_model, set_threads   # Numba and the engine: local chats only
    from .session import ChatSession
    machine = system.detect(args.ram_gb)
    limits = system.limits_for(machine)
    path = find_model(args.model)
    threads = set_threads(args.threads or machine.default_threads())
    with render.busy(console, f"loading {path.name}"):
        loaded = load_model(path, args.device)
    vision, mmproj, vision_note = open_vision(console, path, args.mmproj, loaded, args.device)

    model_context = loaded.model.config.context_length
    context_cap = min(limits.context, model_context)
    fitted = {
        "max_tokens": system.fit(args.max_tokens, limits.max_tokens, limits.max_tokens_cap, "answers", "--max-tokens"),
        "think_budget": system.fit(args.think_budget, limits.think_budget, limits.think_cap, "thinking", "--think-budget"),
        "context": system.fit(args.max_context, context_cap, context_cap, "the context", "--max-context"),
    }
    options = ChatOptions(thinking=args.thinking, think_budget=fitted["think_budget"].value,
                          max_tokens=fitted["max_tokens"].value, max_context=fitted["context"].value,
                          sampling=dict(args.sampling), greedy=args.greedy)
    session = ChatSession(loaded, options, vision=vision, mmproj=mmproj)
    session.set_system(args.system)
    with render.busy(console, "preparing the compute kernels (the first run compiles them, later runs reuse them)"):
        session.warm_up()

    repl = Repl(console, session, machine=machine, limits=limits, threads=threads,
                show_thinking=args.show_think, chat_dir=Path(args.chat_dir) if args.chat_dir else data_dir() / "chats",
                vision_note=vision_note)
    repl.banner([f.warning for f in fitted.values() if f.warning])
    return repl.loop()


def start_remote(console, args: ChatArgs) -> int:
    """The chat against a server: nothing is loaded here; the server's model answers and its
    memory sets the limits, so this machine's limits table does not apply."""
    from .remote import RemoteBackend
    from .remote_session import RemoteChatSession, server_context
    if args.mmproj:
        raise UserError("--mmproj is for the local engine: with --server, pictures go to the server's model")
    warnings = [f"{flag} is for the local engine; ignored with --server"
                for flag, value in (("--threads", args.threads), ("--ram-gb", args.ram_gb)) if value is not None]
    backend = RemoteBackend(args.server, api_key=args.api_key, model=args.model)
    with render.busy(console, f"asking {backend.url} for its model"):
        card = backend.model_card()     # an unreachable server or a refused key stops here, exit 2
    if args.model and backend.listed and args.model not in backend.listed:
        warnings.append(f"the server lists no model {args.model!r} (it has {', '.join(map(str, backend.listed))}); "
                        "asking for it anyway")
    context = server_context(card)
    if args.max_context and context and args.max_context > context:
        warnings.append(f"--max-context {args.max_context} is more than the server's {context}; using {context}")
    options = ChatOptions(thinking=args.thinking, think_budget=args.think_budget, max_tokens=args.max_tokens,
                          max_context=min(filter(None, (args.max_context, context)), default=None),
                          sampling=dict(args.sampling), greedy=args.greedy)
    session = RemoteChatSession(backend, options, card)
    session.set_system(args.system)
    note = None if session.vision else f"pictures are off: {backend.url} says {backend.model} cannot see them"
    repl = Repl(console, session, machine=None, limits=None, threads=None, show_thinking=args.show_think,
                chat_dir=Path(args.chat_dir) if args.chat_dir else data_dir() / "chats", vision_note=note)
    repl.banner(warnings)
    return repl.loop()


def open_vision(console, model_path: Path, explicit: str | None, loaded, device: str = "cpu"):
    """(vision tower or None, mmproj path or None, a line saying why pictures are off)."""
    try:
        from . import multimodal
    except ImportError:
        if explicit:
            raise UserError(f"--mmproj {explicit}: this build of rax cannot read pictures yet") from None
        return None, None, "pictures are off: this build of rax has no vision support yet"
    mmproj = multimodal.find_mmproj(model_path, explicit)
    if mmproj is None:
        return None, None, "pictures are off: no mmproj GGUF beside the model (pass --mmproj FILE)"
    with render.busy(console, f"loading the vision tower {mmproj.name}"):
        vision = multimodal.load_vision(mmproj, loaded.model.config, device)
    return vision, mmproj, None


# -- the loop -------------------------------------------------------------------------
class Repl(SlashCommands):
    """The loop around a session: a local `ChatSession`, or a `RemoteChatSession` (then
    `remote` is true and machine, limits and threads are None: the server's are unknown)."""

    def __init__(self, console, session, machine, limits, threads: int | None, show_thinking: bool,
                 chat_dir: Path, vision_note: str | None = None):
        self.console = console
        self.session = session
        self.remote = getattr(session, "remote", False)
        self.machine, self.limits, self.threads = machine, limits, threads
        self.show_thinking = show_thinking
        self.chat_dir = chat_dir
        self.chat_file = self._new_chat_file()
        self.vision_note = vision_note
        self.pending: list[tuple[str, Path]] = []
        self.interactive = sys.stdin.isatty() and console.is_terminal
        self.line_input = LineInput(data_dir() / "history")

    # -- output helpers ---------------------------------------------------------------
    def say(self, text: str, style: str = "dim") -> None:
        self.console.print(Text(text, style=style))

    def warn(self, text: str) -> None:
        self.say(text, "yellow")

    def banner(self, warnings: list[str]) -> None:
        if self.remote:
            return self.remote_banner(warnings)
        s = self.session
        c = s.model.config
        o = s.options
        self.console.print(Text.assemble(("rax", "bold"), f" · {s.loaded.path.name} "
                                         f"({c.n_layer} layers, trained context {c.context_length})"))
        self.say(f"machine {system.describe_machine(self.machine, self.threads)} · tier {self.limits.tier}")
        self.say(f"limits  answer {o.max_tokens} · think {o.think_budget} · context {o.max_context} tokens "
                 f"(caps {self.limits.max_tokens_cap} / {self.limits.think_cap})")
        for w in warnings:
            self.warn(f"warning: {w}")
        if s.mmproj:
            self.say(f"pictures {s.mmproj.name}: type or drop an image path into a message, or /image PATH")
        elif self.vision_note:
            self.say(self.vision_note)
        self.say("type a message · /help for commands · Ctrl-C stops an answer · Ctrl-D leaves")

    def remote_banner(self, warnings: list[str]) -> None:
        s = self.session
        context = s.options.max_context
        self.console.print(Text.assemble(("rax", "bold"), f" · {s.backend.model} at {s.backend.url}"
                                         + (f" (context {context} tokens)" if context else "")))
        self.say(f"limits  {self.describe_options()}")
        for w in warnings:
            self.warn(f"warning: {w}")
        if s.vision:
            self.say("pictures sent to the server as data URLs: type or drop an image path into a message, "
                     "or /image PATH")
        else:
            self.say(self.vision_note)
        self.say("type a message · /help for commands · Ctrl-C stops an answer · Ctrl-D leaves")

    def describe_options(self) -> str:
        """The answer and thinking limits; with a server, unset ones are the server's defaults."""
        o = self.session.options
        answer = o.max_tokens if o.max_tokens is not None else "the server's default"
        think = o.think_budget if o.think_budget is not None else "the server's default"
        return f"answer {answer} · think {think}" + (f" · context {o.max_context} tokens" if o.max_context else "")

    # -- input ------------------------------------------------------------------------
    def read(self) -> str | None:
        """The next message; None at end of input (Ctrl-D)."""
        if not self.interactive:
            line = sys.stdin.readline()
            return None if not line else line.rstrip("\n")
        return self.line_input.read()

    # -- the loop -----------------------------------------------------------------------
    def loop(self) -> int:
        while True:
            line = self.read()
            if line is None:
                if self.interactive:
                    self.say("bye")
                return 0
            if not line.strip():
                continue
            try:
                if line.lstrip().startswith("/"):
                    if not self.command(line.strip()):
                        return 0
                else:
                    self.send(line)
            except UserError as exc:
                self.say(f"rax: {exc}", "red")
            except KeyboardInterrupt:
                self.warn("stopped")
            except Exception as exc:   # a REPL must survive its own bugs; RAX_DEBUG shows them
                if os.environ.get("RAX_DEBUG"):
                    raise
                self.say(f"rax: unexpected error: {type(exc).__name__}: {exc}", "red")

    # -- one message --------------------------------------------------------------------
    def send(self, line: str) -> None:
        text, found = find_media(line)
        if found and self.session.vision is None:
            self.warn(f"{found[0][1].name} is a picture, but {self.vision_note or 'pictures are off'}; "
                      "the path is sent as text")
            text, found = line, []
        if self.remote and any(kind == "video" for kind, _ in found):
            raise UserError("videos cannot be sent to a server (OpenAI's chat API has no video part); "
                            "the message was not sent")
        for kind, path in found:
            self.preview(kind, path)
        media = self.pending + found
        self.pending = []
        user = Message("user", text,
                       images=[str(p) for k, p in media if k == "image"],
                       videos=[str(p) for k, p in media if k == "video"])
        if media:
            with render.busy(self.console, f"encoding {len(media)} picture{'s' if len(media) > 1 else ''}"):
                prompt = self.session.build_prompt(user)
        else:
            prompt = self.session.build_prompt(user)

        view = render.TurnView(self.console, self.show_thinking)
        stats, note = None, None
        with StopFlag() as stop, view:
            try:
                for step in self.session.ask(user, should_stop=stop, on_prefill=view.prefill_progress, prompt=prompt):
                    view.step(step)
                    if step.finish_reason is not None:
                        stats = step.stats
            except PromptInterrupted:
                note = "stopped while reading the prompt; that message was dropped (the conversation is kept)"
        view.finish(stats, note)
        if stats is not None:
            self.after_answer()

    def after_answer(self) -> None:
        """Boxes the answer names are drawn on the picture; the chat is saved."""
        answer = self.session.conversation.messages[-1]
        image = self.session.conversation.last_image()
        if image and answer.text:
            try:
                from . import grounding
            except ImportError:
                grounding = None
            if grounding is not None:
                boxes = grounding.boxes_for_answer(answer.text, image)
                if boxes:
                    answer.boxes = boxes
                    render.show_picture(self.console, image, boxes)
                    out = self.chat_file.with_name(f"{self.chat_file.stem}-turn{self.session.conversation.turns}-boxes.png")
                    try:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        grounding.save_annotated(image, boxes, out)
                        self.say(f"boxes drawn on the full picture: {out}", "green")
                    except (UserError, OSError) as exc:
                        self.warn(f"could not save the annotated picture: {exc}")
        self.autosave()

    def autosave(self) -> None:
        try:
            self.chat_file.parent.mkdir(parents=True, exist_ok=True)
            self.session.conversation.save(self.chat_file)
        except (UserError, OSError) as exc:
            self.warn(f"could not keep the chat in {self.chat_file}: {exc}")

    def _new_chat_file(self) -> Path:
        return self.chat_dir / time.strftime("chat-%Y%m%d-%H%M%S.json")

    def preview(self, kind: str, path: Path) -> None:
        if kind == "image":
            render.show_picture(self.console, path)
        else:
            frame = first_frame(path)
            if frame is not None:
                render.show_picture(self.console, frame, caption=f"{path.name} · video")
            else:
                self.say(f"[video: {path}]")

