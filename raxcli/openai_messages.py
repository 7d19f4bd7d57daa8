"""OpenAI chat-completions messages → the messages a chat template reads.

The OpenAI shape and the template's differ in small ways: content parts are
`{"type": "image_url", "image_url": {"url": ...}}` rather than `{"type": "image"}`, tool-call
arguments travel as a JSON string while the template iterates a mapping, and `developer`
is the newer name of `system`. Images are decoded here, so that an undecodable one is the
client's error (400) before any work is queued. Everything wrong with a request raises
`RequestError`, which the server turns into OpenAI's error shape.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError


class RequestError(ValueError):
    """A request the client must fix: answered with status 400 (or `status`) and OpenAI's
    error shape."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass
class ImageSource:
    """A picture a request sent, checked to decode. The vision path reads pictures from
    files (as `rax run --image` does), so a data URL's bytes are kept to be written to one."""
    where: str                      # "messages[0].content[1]", for error messages
    size: tuple[int, int]           # (width, height), upright
    path: Path | None = None        # a file URL's file
    data: bytes | None = None       # a data URL's bytes

    def file(self, folder: Path, index: int) -> Path:
        if self.path is not None:
            return self.path
        path = Path(folder) / f"image-{index}"
        path.write_bytes(self.data)
        return path


@dataclass
class TemplateChat:
    """What the chat template needs: its messages, the images in prompt order, the tools."""
    messages: list[dict]
    images: list[ImageSource] = field(default_factory=list)
    tools: list[dict] | None = None


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}


def convert_chat(raw_messages, tools=None, tool_choice=None, *, allow_file_urls: bool) -> TemplateChat:
    """OpenAI `messages` (and `tools`) → template messages plus decoded images."""
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    chat = TemplateChat(messages=[], tools=convert_tools(tools, tool_choice))
    for i, message in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object", param=where)
        role = _ROLES.get(message.get("role"))
        if role is None:
            raise RequestError(f"{where}.role must be one of {', '.join(_ROLES)}, not {message.get('role')!r}",
                               param=f"{where}.role")
        converted = {"role": role,
                     "content": _content(message.get("content"), f"{where}.content", chat.images,
                                         allow_file_urls, images_allowed=role == "user")}
        if role == "assistant":
            reasoning = message.get("reasoning_content", message.get("reasoning"))
            if isinstance(reasoning, str):
                converted["reasoning_content"] = reasoning
            if message.get("tool_calls"):
                converted["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
        if role == "tool" and message.get("tool_call_id") is not None:
            converted["tool_call_id"] = str(message["tool_call_id"])
        chat.messages.append(converted)
    return chat


def convert_tools(tools, tool_choice=None) -> list[dict] | None:
    """The tool list the template shows the model; None when there is none or `tool_choice`
    is "none". Qwen's template prints each tool as given (`{"type": "function", ...}`)."""
    if tools is None or tool_choice == "none":
        return None
    if not isinstance(tools, list):
        raise RequestError("'tools' must be a list", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RequestError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                               param=f"tools[{i}]")
    return tools or None


def _content(content, where: str, images: list, allow_file_urls: bool, images_allowed: bool):
    """A string stays a string; a list of parts becomes template parts, images decoded."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of parts", param=where)
    parts = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            if not images_allowed:
                raise RequestError(f"{here}: images can only be sent in user messages", param=here)
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise RequestError(f"{here}.image_url.url must be a string", param=here)
            images.append(load_image_url(url, here, allow_file_urls))
            parts.append({"type": "image"})
        else:
            raise RequestError(f"{here}: parts must be {{\"type\": \"text\"}} or {{\"type\": \"image_url\"}}, "
                               f"not {kind!r}", param=here)
    return parts


def _tool_calls(calls, where: str) -> list[dict]:
    """Assistant tool calls with their arguments parsed: the template walks them as a mapping."""
    if not isinstance(calls, list):
        raise RequestError(f"{where} must be a list", param=where)
    converted = []
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError(f"{where}[{k}] must have function.name", param=f"{where}[{k}]")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise RequestError(f"{where}[{k}].function.arguments is not JSON: {exc}",
                                   param=f"{where}[{k}].function.arguments") from None
        if not isinstance(arguments, dict):
            raise RequestError(f"{where}[{k}].function.arguments must be a JSON object",
                               param=f"{where}[{k}].function.arguments")
        converted.append({"id": call.get("id"), "type": "function",
                          "function": {"name": function["name"], "arguments": arguments}})
    return converted


def load_image_url(url: str, where: str = "image_url", allow_file_urls: bool = True) -> ImageSource:
    """A `data:` URL (base64) or a `file:` URL → a picture known to decode; anything else,
    or a picture that does not decode, is the client's error."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        header, _, payload = url.partition(",")
        if not header.lower().endswith(";base64"):
            raise RequestError(f"{where}: data URLs must be base64 (data:image/png;base64,...)", param=where)
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"{where}: the data URL is not valid base64", param=where) from None
        return ImageSource(where, _decode_image(raw, where, where).size, data=raw)
    if scheme == "file":
        if not allow_file_urls:
            raise RequestError(f"{where}: this server does not read file URLs (start it with --allow-file-urls)",
                               param=where)
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise RequestError(f"{where}: file URLs must name a local path (file:///...)", param=where)
        path = Path(url2pathname(unquote(parsed.path)))
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RequestError(f"{where}: cannot read {path}: {exc.strerror or exc}", param=where) from None
        return ImageSource(where, _decode_image(raw, f"{where} ({path})", where).size, path=path)
    raise RequestError(f"{where}: images must be data: or file: URLs (this server fetches nothing "
                       "from the network)", param=where)


def _decode_image(raw: bytes, where: str, param: str) -> Image.Image:
    """Decoded as `rax run` decodes a file: upright (EXIF orientation), 8-bit RGB,
    transparency on white, refused when it would not fit in the memory left."""
    from .media import limit_decode_size, to_rgb
    try:
        with Image.open(io.BytesIO(raw)) as image:
            limit_decode_size(image, where)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except UserError as exc:
        raise RequestError(str(exc), param=param, code="image_too_large") from None
    except UnidentifiedImageError:
        raise RequestError(f"{where}: cannot decode the image: not a picture format Pillow reads",
                           param=param, code="invalid_image") from None
    except Exception as exc:  # truncated or corrupt data: Pillow raises many types
        raise RequestError(f"{where}: cannot decode the image: {str(exc) or type(exc).__name__}",
                           param=param, code="invalid_image") from None


def thinking_switch(body: dict) -> bool | None:
    """`chat_template_kwargs.enable_thinking` (as vLLM and SGLang take it); None = template default."""
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise RequestError("'chat_template_kwargs' must be an object", param="chat_template_kwargs")
    value = kwargs.get("enable_thinking")
    if value is not None and not isinstance(value, bool):
        raise RequestError("chat_template_kwargs.enable_thinking must be true or false",
                           param="chat_template_kwargs.enable_thinking")
    return value


def template_extras(body: dict) -> dict:
    """Other `chat_template_kwargs` (add_vision_id ...) for the template; reserved names refused."""
    kwargs = dict(body.get("chat_template_kwargs") or {})
    kwargs.pop("enable_thinking", None)
    clash = {"messages", "tools", "add_generation_prompt", "documents"} & set(kwargs)
    if clash:
        raise RequestError(f"chat_template_kwargs cannot set {', '.join(sorted(clash))}",
                           param="chat_template_kwargs")
    return kwargs
