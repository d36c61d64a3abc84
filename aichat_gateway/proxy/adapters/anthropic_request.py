"""OpenAI chat request -> Anthropic Messages request (pure; raises UnsupportedRequest naming the param).

What maps:
- `system` and `developer` messages -> the top-level `system` string (texts joined by a blank
  line; Anthropic has no mid-conversation system turn, so all of them are hoisted).
- `user` / `assistant` content (a string or parts) -> content blocks: `text` (and assistant
  `refusal`) parts -> text blocks, empty texts dropped; `image_url` with a base64 `data:` URL ->
  a base64 image source, with an http(s) URL -> a url source.
- assistant `tool_calls` -> `tool_use` blocks (`arguments` parsed: it must be a JSON object).
- `tool` messages -> `tool_result` blocks in a user turn; consecutive turns of the same role
  (several tool results, tool results then the user's text) are merged into one message, which is
  also what Anthropic itself does with consecutive turns.
- `tools` (functions) -> `{name, description, input_schema}`; `tool_choice` "auto" / "none" /
  "required" / a named function -> auto / none / any / tool; `parallel_tool_calls: false` ->
  `disable_parallel_tool_use`. Without `tools`, tool_choice is dropped.
- `max_completion_tokens` or `max_tokens` -> `max_tokens`, which Anthropic requires: absent, it is
  DEFAULT_MAX_TOKENS (the gateway's holds must use the same number).
- `temperature` (Anthropic allows 0..1, so above 1 is refused), `top_p`, `stop` ->
  `stop_sequences`, `stream`, `user` -> `metadata.user_id`.

Refused (each would silently change the answer): n > 1, logprobs, top_logprobs, a non-empty
logit_bias, non-zero frequency/presence penalties, response_format other than text, audio output,
reasoning_effort, web_search_options, the legacy `functions`/`function_call` and `function` role,
and content parts other than text and images. Ignored as harmless: seed (best effort in OpenAI
too), store, metadata, service_tier, prediction, stream_options (the translator handles usage),
tool `strict`, message `name`, and unknown fields.
"""

from __future__ import annotations

from typing import Any

import orjson

from aichat_gateway.proxy.adapters.base import UnsupportedRequest

__all__ = ["DEFAULT_MAX_TOKENS", "messages_body"]

DEFAULT_MAX_TOKENS = 4096
_PROVIDER = "This model is served by Anthropic, which"
# Fields refused unless absent or one of these values (which ask for nothing).
_REFUSED: dict[str, tuple[object, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}
_LEGACY = ("functions", "function_call")


def messages_body(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    """The Messages API body for a validated OpenAI chat body."""
    _refuse_unhonourable(body)
    system, messages = _conversation(body["messages"])
    out: dict[str, Any] = {"model": upstream_model, "max_tokens": _max_tokens(body)}
    if system:
        out["system"] = system
    out["messages"] = messages
    tools = body.get("tools")
    if tools is not None:
        out["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    _sampling(body, out)
    if stream:
        out["stream"] = True
    return out


def _refuse(message: str, param: str) -> UnsupportedRequest:
    return UnsupportedRequest(message, param=param)


def _refuse_unhonourable(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise _refuse(f"{_PROVIDER} returns one choice per request; 'n' must be 1.", "n")
    for name, neutral in _REFUSED.items():
        if body.get(name) not in neutral:
            raise _refuse(f"{_PROVIDER} does not support '{name}'.", name)
    for name in _LEGACY:
        if body.get(name) is not None:
            raise _refuse(f"{_PROVIDER} does not support the legacy '{name}'; use 'tools' instead.", name)
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0):
            raise _refuse(f"{_PROVIDER} does not support '{name}'; leave it out or set it to 0.", name)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise _refuse(f"{_PROVIDER} does not support 'response_format' other than text.", "response_format")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _refuse(f"{_PROVIDER} answers with text only; 'modalities' must be [\"text\"].", "modalities")


def _max_tokens(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return DEFAULT_MAX_TOKENS


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature) or not 0 <= temperature <= 1:
            raise _refuse(f"{_PROVIDER} takes a 'temperature' between 0 and 1.", "temperature")
        out["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None:
        if not _is_number(top_p):
            raise _refuse("'top_p' must be a number.", "top_p")
        out["top_p"] = top_p
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stop_sequences"] = stop
    elif stop is not None:
        raise _refuse("'stop' must be a string or an array of strings.", "stop")
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise _refuse("'user' must be a string.", "user")
        out["metadata"] = {"user_id": user}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _conversation(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where, role = f"messages.{index}", message["role"]
        if role in ("system", "developer"):
            system.extend(b["text"] for b in _blocks(message.get("content"), where, images=False))
            continue
        if role == "user":
            _add(turns, "user", _blocks(message.get("content"), where, images=True))
        elif role == "assistant":
            blocks = _blocks(message.get("content"), where, images=False)
            _add(turns, "assistant", blocks + _tool_uses(message.get("tool_calls"), where))
        elif role == "tool":
            _add(turns, "user", [_tool_result(message, where)])
        else:
            raise _refuse(f"{_PROVIDER} does not support messages with role '{role}'.", f"{where}.role")
    if not turns:
        raise _refuse(f"{_PROVIDER} needs at least one user or assistant message.", "messages")
    return "\n\n".join(system), turns


def _add(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _blocks(content: object, where: str, *, images: bool) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _refuse("'content' must be a string or an array of content parts.", f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        param = f"{where}.content.{index}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise _refuse(f"A {kind} part needs a string '{kind}'.", param)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url" and images:
            blocks.append(_image(part.get("image_url"), param))
        else:
            raise _refuse(f"{_PROVIDER} does not support content parts of type {kind!r} here.", param)
    return blocks


def _image(value: object, param: str) -> dict[str, Any]:
    url = value.get("url") if isinstance(value, dict) else value
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *options = header.split(";")
        if comma and media_type and "base64" in options and data:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    elif isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _refuse("'image_url.url' must be an http(s) URL or a base64 data: URL.", f"{param}.image_url.url")


def _tool_uses(calls: object, where: str) -> list[dict[str, Any]]:
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise _refuse("'tool_calls' must be an array.", f"{where}.tool_calls")
    blocks = []
    for index, call in enumerate(calls):
        param = f"{where}.tool_calls.{index}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise _refuse("Each tool call must be a function call.", param)
        call_id, name = call.get("id"), function.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise _refuse("A tool call needs a string 'id' and 'function.name'.", param)
        arguments = _arguments(function.get("arguments"), f"{param}.function.arguments")
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return blocks


def _arguments(value: object, param: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _refuse("Tool call arguments must be a JSON object.", param) from None
    if not isinstance(value, dict):
        raise _refuse("Tool call arguments must be a JSON object.", param)
    return value


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _refuse("A tool message needs a string 'tool_call_id'.", f"{where}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        blocks = _blocks(content, where, images=True)
        if blocks:
            block["content"] = blocks
    return block


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _refuse("'tools' must be an array.", "tools")
    out = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _refuse(f"{_PROVIDER} supports only function tools.", f"tools.{index}")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _refuse("A function tool needs a string 'name'.", f"tools.{index}.function.name")
        converted: dict[str, Any] = {"name": name}
        if isinstance(function.get("description"), str):
            converted["description"] = function["description"]
        parameters = function.get("parameters")
        converted["input_schema"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        out.append(converted)
    return out


def _tool_choice(choice: object, parallel: object) -> dict[str, Any] | None:
    result: dict[str, Any]
    if choice is None or choice == "auto":
        if choice is None and parallel is not False:
            return None
        result = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    else:
        function = choice.get("function") if isinstance(choice, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(choice, dict) or not isinstance(name, str) or choice.get("type") != "function":
            raise _refuse("'tool_choice' must be auto, none, required or a named function.", "tool_choice")
        result = {"type": "tool", "name": name}
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result
