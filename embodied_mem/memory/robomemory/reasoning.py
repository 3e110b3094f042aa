"""The one thing RoboMemory needs from a language model: ``chat(messages) -> str``.

``embodied_mem.llm`` (an OpenAI-compatible ``ChatClient``, its ``Chat`` protocol and
``client_from_env()``) is used when it exists (a local copy of the protocol otherwise); this
module adds a JSON helper that never raises (a reply that is not a JSON object is ``None``, and
the caller falls back to its deterministic rule).
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, runtime_checkable


try:  # the project's client protocol, when the shared module is there
    from embodied_mem.llm import Chat as ChatModel  # noqa: F401
except ImportError:  # pragma: no cover - defined locally until embodied_mem.llm exists

    @runtime_checkable
    class ChatModel(Protocol):  # type: ignore[no-redef]
        """Anything with ``chat(messages: list[dict]) -> str`` (OpenAI-style role / content dicts)."""

        def chat(self, messages: list[dict]) -> str: ...


def ask_json(client: ChatModel, prompt: str, system: str = "Reply with one JSON object and nothing else.") -> Any | None:
    """Ask ``client`` and parse the first JSON object in its reply; None on any failure."""
    try:
        reply = client.chat([{"role": "system", "content": system}, {"role": "user", "content": prompt}])
    except Exception:  # a network error, a timeout, a refusal: the deterministic rule answers
        return None
    if not isinstance(reply, str):
        return None
    match = re.search(r"\{.*\}", reply, re.S)
    if match is None:
        return None
    try:
        return json.loads(match.group(0))
    except (json.JSONDecodeError, ValueError):
        return None


def client_from_env() -> ChatModel | None:
    """The project's client from ``EMBODIED_MEM_LLM_*`` when ``embodied_mem.llm`` exists, else None."""
    try:
        from embodied_mem import llm
    except ImportError:
        return None
    try:
        return llm.client_from_env()
    except ValueError:  # the variables are not set
        return None
