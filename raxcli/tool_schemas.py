"""`--tools FILE`: the function schemas a chat template shows the model.

The file holds a JSON list of tools (or {"tools": [...]}), each in OpenAI's shape
{"type": "function", "function": {"name", "description", "parameters"}} or as the bare
function {"name", "description", "parameters"}; bare ones are wrapped as transformers'
`apply_chat_template` wraps them, so the template prints the same text either way.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


def load_tools(path: str | Path) -> list[dict]:
    path = Path(path)
    where = f"--tools {path}"
    if not path.is_file():
        raise UserError(f"{where}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise UserError(f"{where}: expected a non-empty JSON list of function schemas")
    return [_checked(tool, i, where) for i, tool in enumerate(data)]


def _checked(tool, index: int, where: str) -> dict:
    if not isinstance(tool, dict):
        raise UserError(f"{where}: tool {index} is not a JSON object")
    if tool.get("type", "function") != "function":
        raise UserError(f"{where}: tool {index} has type {tool.get('type')!r}; only 'function' tools exist")
    function = tool.get("function", tool if "function" not in tool else None)
    if not isinstance(function, dict):
        raise UserError(f"{where}: tool {index}: 'function' must be an object")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: tool {index} has no name")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise UserError(f"{where}: tool {name!r}: 'parameters' must be a JSON schema object")
    if "function" in tool:
        return tool
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
