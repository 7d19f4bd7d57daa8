"""Tool calls in the model's own words → structured calls.

Qwen3.5's template teaches the model to call a function like this (one block per call):

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Parameter values are written bare; the template writes objects and lists as JSON and
everything else as its string form, so reading them back needs the tool's JSON schema to
know whether `42` was the number or the string.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# A block may lack its closing tag when generation stopped right after </function>.
_BLOCK = re.compile(r"<tool_call>\s*<function=([^>\n]+)>(.*?)</function>\s*(?:</tool_call>|$)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: dict

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> tuple[str, list[ToolCall]]:
    """(the text outside the calls, the calls in order). Text without a well-formed call
    comes back whole with no calls, so a malformed attempt is shown rather than lost."""
    calls: list[ToolCall] = []
    outside: list[str] = []
    position = 0
    for block in _BLOCK.finditer(text):
        outside.append(text[position:block.start()])
        position = block.end()
        name = block.group(1).strip()
        types = _parameter_types(tools, name)
        arguments = {p.group(1).strip(): _value(_strip_one_newline(p.group(2)), types.get(p.group(1).strip()))
                     for p in _PARAMETER.finditer(block.group(2))}
        calls.append(ToolCall(name, arguments))
    if not calls:
        return text, []
    outside.append(text[position:])
    return "".join(outside).strip(), calls


def _strip_one_newline(value: str) -> str:
    # the template frames each value as "<parameter=p>\n" + value + "\n</parameter>"
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def _parameter_types(tools: list[dict] | None, name: str) -> dict:
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else {}
        if function.get("name") == name:
            properties = (function.get("parameters") or {}).get("properties") or {}
            return {p: spec.get("type") for p, spec in properties.items() if isinstance(spec, dict)}
    return {}


def _value(raw: str, declared_type):
    """The schema says what the bare text was; without a schema, JSON if it reads as JSON."""
    declared = declared_type if isinstance(declared_type, list) else [declared_type]
    if "string" in declared:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
