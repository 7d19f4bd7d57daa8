"""Reading a message at the chat prompt: line editing, history, completion of slash
commands and paths, Alt-Enter for new lines and \"\"\" blocks for long messages (prompt_toolkit)."""
from __future__ import annotations

from pathlib import Path

COMMANDS = ["/image", "/video", "/think", "/budget", "/system", "/clear", "/save", "/load",
            "/stats", "/info", "/help", "/exit", "/quit", "/bye"]


class LineInput:
    def __init__(self, history_file: Path):
        self.history_file = history_file
        self._session = None

    def read(self, prompt: str = ">>> ") -> str | None:
        """The next message; None at Ctrl-D. Ctrl-C at the prompt clears the line."""
        if self._session is None:
            self._session = self._make_session()
        while True:
            try:
                text = self._session.prompt(prompt)
            except KeyboardInterrupt:
                continue
            except EOFError:
                return None
            stripped = text.strip()
            if stripped.startswith('"""'):
                stripped = stripped[3:]
                if stripped.endswith('"""'):
                    stripped = stripped[:-3]
                return stripped.strip("\n")
            return text

    def _make_session(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("enter")
        def _enter(event):
            buffer = event.current_buffer
            text = buffer.text.strip()
            if text.startswith('"""') and not (len(text) >= 6 and text.endswith('"""')):
                buffer.insert_text("\n")      # inside a \"\"\" block: Enter is a new line
            else:
                buffer.validate_and_handle()

        @keys.add("escape", "enter")
        def _newline(event):
            event.current_buffer.insert_text("\n")

        try:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(self.history_file))
        except OSError:
            history = InMemoryHistory()
        return PromptSession(history=history, multiline=True, key_bindings=keys,
                             prompt_continuation="... ", completer=_completer(), complete_while_typing=False)


def _completer():
    from prompt_toolkit.completion import Completer, PathCompleter, WordCompleter
    from prompt_toolkit.document import Document

    commands = WordCompleter(COMMANDS, sentence=True)
    paths = PathCompleter(expanduser=True)

    class SlashCompleter(Completer):
        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            if " " not in text:
                yield from commands.get_completions(document, complete_event)
            elif text.split(" ", 1)[0] in ("/image", "/video", "/save", "/load"):
                word = text.rsplit(" ", 1)[1]
                yield from paths.get_completions(Document(word, len(word)), complete_event)

    return SlashCompleter()
