"""The LLM reasoner against a small local HTTP server speaking the OpenAI chat-completions
protocol (as vLLM, llama.cpp's server and Ollama do): valid JSON accepted, invalid JSON retried
then refused with a clear message and the offline reasoner used, timeouts and dead servers
handled."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from embodied_mem.llm import ChatClient, LlmError, LlmReasoner, client_from_env
from embodied_mem.reasoner import InstructionReasoner, Lexicon, ReasonerConfig

LEXICON = Lexicon.build(objects=["mug", "bowl"], receptacles=["table"], attributes={"color": ["red"]}, days=[0, 1])
GOOD = {"goals": [{"target": "object", "day": 1, "category": "mug", "interacted": True}], "ordered": False}


class Server:
    """Answers each POST with the next scripted reply (a str, or ("sleep", seconds))."""

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                reply = outer.replies.pop(0) if outer.replies else "{}"
                if isinstance(reply, tuple):
                    time.sleep(reply[1])
                    reply = json.dumps(GOOD)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except BrokenPipeError:  # the client gave up (the timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def offline():
    return InstructionReasoner(ReasonerConfig(encoder=None))


def test_valid_json_is_accepted_and_the_request_follows_the_protocol(offline):
    server = Server(["Sure! ```json\n" + json.dumps(GOOD) + "\n```"])
    try:
        parse = LlmReasoner(ChatClient(server.url, "tiny-model", api_key="k3y"), offline).parse("the mug I moved", LEXICON)
    finally:
        server.close()
    assert parse.understood and parse.source == "openai"
    assert parse.constraints == GOOD
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k3y"
    assert request["body"]["model"] == "tiny-model"
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert "mug" in request["body"]["messages"][1]["content"]  # the memory's vocabulary is sent


def test_invalid_json_is_retried_once_then_the_offline_reasoner_answers(offline):
    server = Server(["not json at all", json.dumps({"goals": [{"target": "thing"}]})])
    try:
        parse = LlmReasoner(ChatClient(server.url, "m"), offline).parse("Go to the red mug you moved yesterday.", LEXICON)
    finally:
        server.close()
    assert len(server.requests) == 2  # one retry, carrying the validation error
    assert "invalid" in server.requests[1]["body"]["messages"][-1]["content"]
    assert parse.source == "offline (fallback)"
    assert "invalid LLM output" in parse.reason and "constraints.goals[0].target" in parse.reason
    assert parse.understood and parse.constraints["goals"][0]["category"] == "mug"  # the offline parse


def test_a_valid_retry_is_accepted(offline):
    server = Server(["{broken", json.dumps(GOOD)])
    try:
        parse = LlmReasoner(ChatClient(server.url, "m"), offline).parse("x", LEXICON)
    finally:
        server.close()
    assert parse.source == "openai" and parse.constraints == GOOD


def test_a_timeout_falls_back_without_waiting_again(offline):
    server = Server([("sleep", 2.0)])
    try:
        started = time.perf_counter()
        parse = LlmReasoner(ChatClient(server.url, "m", timeout=0.3), offline).parse("Go to the mug you moved yesterday.", LEXICON)
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    assert "timed out" in parse.reason and parse.source == "offline (fallback)"
    assert len(server.requests) == 1  # a dead or slow server is not asked twice
    assert elapsed < 1.9


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(LlmError, match="unreachable"):
        ChatClient("http://127.0.0.1:9/v1", "m", timeout=1.0).chat([{"role": "user", "content": "hi"}])


def test_the_llm_may_say_it_cannot(offline):
    server = Server([json.dumps({"error": "no such thing in memory"})])
    try:
        parse = LlmReasoner(ChatClient(server.url, "m"), offline).parse("fly to the moon", LEXICON)
    finally:
        server.close()
    assert not parse.understood and "no such thing" in parse.reason


def test_client_from_env_needs_url_and_model():
    with pytest.raises(ValueError, match="EMBODIED_MEM_LLM_BASE_URL"):
        client_from_env({})
    client = client_from_env({"EMBODIED_MEM_LLM_BASE_URL": "http://x/v1", "EMBODIED_MEM_LLM_MODEL": "m", "EMBODIED_MEM_LLM_TIMEOUT": "5"})
    assert client.model == "m" and client.timeout == 5.0 and client.api_key is None
