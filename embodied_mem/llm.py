"""Any LLM server: an OpenAI-compatible chat client, and the instruction reasoner over it.

vLLM, llama.cpp's server, Ollama and the hosted APIs all speak ``POST {base_url}/chat/completions``
with ``{"model", "messages"}`` and answer ``{"choices": [{"message": {"content": ...}}]}``. Nothing
here is called by default: ``agent.reasoner=openai`` (or ``client_from_env()``) turns it on, with

    EMBODIED_MEM_LLM_BASE_URL   e.g. http://localhost:8000/v1
    EMBODIED_MEM_LLM_MODEL      e.g. Qwen/Qwen2.5-7B-Instruct
    EMBODIED_MEM_LLM_API_KEY    optional (sent as a Bearer token)
    EMBODIED_MEM_LLM_TIMEOUT    seconds, default 30

``LlmReasoner`` sends the instruction and the memory's vocabulary, asks for the constraints as
JSON, validates them against the schema of ``memory/resolve.py``, asks once more with the
validation error on invalid output, and then falls back to the offline reasoner (saying so in
``Parse.source`` and ``Parse.reason``). Standard library only (urllib): no new dependency.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from embodied_mem.constraints import validate_constraints
from embodied_mem.reasoner import InstructionReasoner, Lexicon, Parse


class LlmError(RuntimeError):
    """The server could not be reached, timed out, or answered something that is not a chat reply."""


class Chat(Protocol):
    def chat(self, messages: list[dict]) -> str: ...


@dataclass
class ChatClient:
    """A minimal OpenAI-compatible chat-completions client."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 30.0
    temperature: float = 0.0

    def chat(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature}).encode()
        request = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except (socket.timeout, TimeoutError) as error:
            raise LlmError(f"LLM server {self.base_url} timed out after {self.timeout:g} s") from error
        except urllib.error.HTTPError as error:
            raise LlmError(f"LLM server {self.base_url} answered HTTP {error.code}: {error.read()[:200]!r}") from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, (socket.timeout, TimeoutError)):
                raise LlmError(f"LLM server {self.base_url} timed out after {self.timeout:g} s") from error
            raise LlmError(f"LLM server {self.base_url} unreachable: {error.reason}") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LlmError(f"LLM server {self.base_url} answered something that is not JSON") from error
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as error:
            raise LlmError(f"LLM server {self.base_url} answered without choices[0].message.content") from error


def client_from_env(environ: dict | None = None) -> ChatClient:
    """A ``ChatClient`` from the ``EMBODIED_MEM_LLM_*`` variables (base URL and model required)."""
    env = os.environ if environ is None else environ
    base, model = env.get("EMBODIED_MEM_LLM_BASE_URL"), env.get("EMBODIED_MEM_LLM_MODEL")
    if not base or not model:
        raise ValueError("agent.reasoner=openai needs EMBODIED_MEM_LLM_BASE_URL and EMBODIED_MEM_LLM_MODEL in the environment")
    return ChatClient(base, model, env.get("EMBODIED_MEM_LLM_API_KEY") or None, float(env.get("EMBODIED_MEM_LLM_TIMEOUT", "30")))


SYSTEM_PROMPT = """You turn a robot user's instruction into a JSON query over the robot's memory.
Answer with one JSON object and nothing else: {"goals": [Goal, ...], "ordered": bool}.
A Goal has "target" ("object" | "receptacle" | "room"), "day" (integer day index, or null for any day),
optional "category", "attributes" (e.g. {"color": "red"}), "interacted" (true/false), "role"
("start" = picked from, "goal" = placed on), "related" ({"category", "attributes"} of the other party),
and "select", one of: {"by": "order", "index": i} (0 first, -1 last), {"by": "after"|"before", "object": {...}},
{"by": "time", "minute": minute_of_day}, {"by": "duration", "extreme": "longest"|"shortest"},
{"by": "duration", "seconds": s, "tolerance": 10}, {"by": "farthest"},
{"by": "room", "property": "initial"|"final"|"longest_time"|"visited"|"not_visited"},
{"by": "object_room", "object": {...}, "when": "initial"|"final"}.
Use only categories, attributes and days from the vocabulary given. If the instruction cannot be
expressed, answer {"error": "why"}."""


def _vocabulary(lexicon: Lexicon) -> str:
    return json.dumps({
        "objects": sorted(set(lexicon.objects.values())),
        "receptacles": sorted(set(lexicon.receptacles.values())),
        "attributes": {key: sorted(v for v, k in lexicon.attributes.items() if k == key) for key in sorted(set(lexicon.attributes.values()))},
        "days": lexicon.days,
        "yesterday_is_day": lexicon.last_day,
        "interactions_per_day": {str(d): len(v) for d, v in lexicon.interactions.items()},
    })


def _json_of(reply: str) -> dict:
    """The JSON object in a reply (code fences and prose around it are tolerated)."""
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", reply, re.S)
    text = fenced.group(1) if fenced else reply[reply.find("{"): reply.rfind("}") + 1]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise ValueError("the JSON is not an object")
    return value


class LlmReasoner:
    """Instruction -> constraints through an OpenAI-compatible server, checked against the schema."""

    def __init__(self, client: Chat, fallback: InstructionReasoner | None = None, retries: int = 1) -> None:
        self.client = client
        self.fallback = fallback or InstructionReasoner()
        self.retries = int(retries)

    def parse(self, instruction: str, lexicon: Lexicon) -> Parse:
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Vocabulary: {_vocabulary(lexicon)}\nInstruction: {instruction}"},
        ]
        problem = ""
        for _ in range(1 + self.retries):
            try:
                reply = self.client.chat(messages)
            except LlmError as error:
                problem = str(error)
                break  # a dead server is not retried: the offline reasoner answers at once
            try:
                value = _json_of(reply)
                if "error" in value and "goals" not in value:
                    return Parse(instruction, None, False, f"the LLM could not express it: {value['error']}", source="openai")
                validate_constraints(value)
                return Parse(instruction, {"goals": value["goals"], "ordered": bool(value.get("ordered", False))}, True, source="openai")
            except ValueError as error:
                problem = f"invalid LLM output: {error}"
                messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": f"That was invalid ({error}). Answer with the JSON object only."}]
        parse = self.fallback.parse(instruction, lexicon)
        parse.source = "offline (fallback)"
        parse.reason = f"{problem}; offline reasoner used" + (f": {parse.reason}" if parse.reason else "")
        return parse
