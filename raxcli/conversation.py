"""A chat as messages: what was said, with which pictures, saved to and loaded from JSON.

Images and videos are kept by path (absolute), not copied: a saved chat is small and the
pictures stay where the user keeps them.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

FORMAT = "rax-chat"
VERSION = 1


@dataclass
class Message:
    role: str                                   # "user" | "assistant"
    text: str
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    thinking: str = ""                          # assistant only
    finish_reason: str | None = None            # assistant only: stop | length | interrupted
    boxes: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"role": self.role, "text": self.text}
        for key in ("images", "videos", "thinking", "finish_reason", "boxes"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Message":
        if not isinstance(data, dict) or data.get("role") not in ("user", "assistant"):
            raise ValueError("each message needs a role of 'user' or 'assistant'")
        if not isinstance(data.get("text", ""), str):
            raise ValueError("a message's text must be a string")
        return cls(role=data["role"], text=data.get("text", ""),
                   images=[str(p) for p in data.get("images", [])], videos=[str(p) for p in data.get("videos", [])],
                   thinking=data.get("thinking", "") or "", finish_reason=data.get("finish_reason"),
                   boxes=list(data.get("boxes", [])))

    def template_message(self) -> dict:
        """The message as a chat template reads it: media parts first, then the text."""
        if self.role == "assistant":
            return {"role": "assistant", "content": self.text, "reasoning_content": self.thinking}
        if not self.images and not self.videos:
            return {"role": "user", "content": self.text}
        parts = [{"type": "image", "image": p} for p in self.images]
        parts += [{"type": "video", "video": p} for p in self.videos]
        parts.append({"type": "text", "text": self.text})
        return {"role": "user", "content": parts}


@dataclass
class Conversation:
    system: str | None = None
    messages: list[Message] = field(default_factory=list)
    model: str | None = None

    def template_messages(self, extra: list[Message] = ()) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [m.template_message() for m in [*self.messages, *extra]]

    def media(self) -> list[tuple[str, str]]:
        """("image" | "video", path) in the order the template places them."""
        out = []
        for m in self.messages:
            out += [("image", p) for p in m.images] + [("video", p) for p in m.videos]
        return out

    def last_image(self) -> str | None:
        for m in reversed(self.messages):
            if m.images:
                return m.images[-1]
        return None

    @property
    def turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")

    # -- files -----------------------------------------------------------------
    def as_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "system": self.system,
                "messages": [m.as_dict() for m in self.messages]}

    def save(self, path: str | Path) -> Path:
        """Write the conversation as JSON, replacing `path` only once the file is whole."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise UserError(f"{path}: is a folder; give a file name such as chat.json")
        if not path.parent.is_dir():
            raise UserError(f"{path}: no such folder {path.parent}")
        text = json.dumps(self.as_dict(), ensure_ascii=False, indent=1)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".rax-chat-", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Conversation":
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path}: not a rax conversation (saved with /save)")
        try:
            messages = [Message.from_dict(m) for m in data.get("messages", [])]
        except ValueError as exc:
            raise UserError(f"{path}: {exc}") from None
        system = data.get("system")
        return cls(system=system if isinstance(system, str) and system else None, messages=messages,
                   model=data.get("model"))
