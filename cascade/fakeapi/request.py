"""What a Messages request body says (its user text, the item in it, its labels, its
size in tokens) and the model catalogue's rules the real API answers 400 for."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

MODELS = frozenset({
    "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5",
    "claude-haiku-4-5-20251001", "claude-sonnet-5", "claude-opus-5",
})  # fmt: skip
NO_FORCED_TOOL = frozenset({"claude-sonnet-5-5", "claude-opus-5-5"})
NO_SAMPLING = frozenset(
    {"claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-sonnet-5"}
)
JSON_SCHEMA_OK = frozenset({"claude-haiku-4-5", "claude-haiku-4-5-20251001"})
_ITEM = re.compile(r"<item>(.*?)</item>", re.DOTALL)


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def user_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages") or []
    return "".join(text_of(m.get("content")) for m in messages if m.get("role") == "user")


def item_text(user: str) -> str:
    match = _ITEM.search(user)
    if match is None:
        return user
    # The prompt puts the item on its own lines between the tags.
    raw = match.group(1).removeprefix("\n").removesuffix("\n")
    return raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def input_tokens(body: Mapping[str, Any]) -> int:
    tools = body.get("tools")
    chars = len(text_of(body.get("system"))) + len(user_text(body))
    if tools:
        chars += len(json.dumps(tools))
    return math.ceil(chars / 4)


def schema_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    return fmt if isinstance(fmt, dict) else None


def labels_of(body: Mapping[str, Any]) -> list[str]:
    tools = body.get("tools") or []
    fmt = schema_format(body)
    schema = tools[0].get("input_schema", {}) if tools else (fmt or {}).get("schema", {})
    enum = schema.get("properties", {}).get("label", {}).get("enum", [])
    return [str(v) for v in enum]


def check_rules(model: str, body: Mapping[str, Any]) -> str | None:
    """The reason the real API would answer 400 for this body, or None."""
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: at least one message is required"
    choice = body.get("tool_choice")
    if (
        model in NO_FORCED_TOOL
        and isinstance(choice, dict)
        and choice.get("type") in ("tool", "any")
    ):
        return f"tool_choice: forced tool use is not supported on {model}; use tool_choice auto"
    if model in NO_SAMPLING:
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                return f"{name}: sampling parameters are not supported on {model}"
    fmt = schema_format(body)
    if fmt is not None and (fmt.get("type") != "json_schema" or model not in JSON_SCHEMA_OK):
        return f"output_config.format: structured outputs are not supported on {model}"
    return None
