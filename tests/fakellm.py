"""A fake OpenAI-compatible model server for end-to-end tests.

OpenCode's ``@ai-sdk/openai-compatible`` provider talks to it like to a hosted model,
so a prompt completes offline and deterministically. It answers
``POST /v1/chat/completions`` (streamed as server-sent events or as one JSON body) and
``GET /v1/models``, and keeps every request body it received so that a test can check
what reached the model byte for byte.

In-process::

    with FakeLLM(reply=echo_last_user_message) as llm:
        config = fake_provider_config(llm.base_url)

As a process (for OpenCode running inside a sandbox); it prints its base URL::

    python tests/fakellm.py --port 0 --reply "done" --chunk-delay 0.2 --record log.jsonl

Only the standard library is used so that the process form runs on any Python 3.10+.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "fake-model"
DEFAULT_REPLY = "Hello from the fake model."
DEFAULT_TITLE = "Fake session title"

# OpenCode asks its small model for a session title with a system prompt that names the
# task; answering those with the scripted reply would rename every session after it.
TITLE_MARKERS = ("title generator", "generate a title", "conversation title")

Reply = str | Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake model received it."""

    method: str
    path: str
    raw: bytes
    headers: dict[str, str]

    @property
    def body(self) -> dict[str, Any]:
        if not self.raw:
            return {}
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.endswith("/chat/completions")

    @property
    def is_title(self) -> bool:
        return self.is_chat and is_title_request(self.body)


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def user_messages(body: dict[str, Any]) -> list[str]:
    """Texts of the user messages of a chat request, oldest first."""
    return [
        message_text(m) for m in body.get("messages", []) if m.get("role") == "user"
    ]


def is_title_request(body: dict[str, Any]) -> bool:
    system = " ".join(
        message_text(m).lower()
        for m in body.get("messages", [])
        if m.get("role") == "system"
    )
    return any(marker in system for marker in TITLE_MARKERS)


def echo_last_user_message(body: dict[str, Any]) -> str:
    """A reply function that answers with the last user message, unchanged."""
    users = user_messages(body)
    return users[-1] if users else ""


def split_reply(text: str, chunks: int) -> list[str]:
    """Cut text into at most `chunks` non-empty pieces that join back to it exactly."""
    if not text:
        return [""]
    count = max(1, min(chunks, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


class FakeLLM:
    """The fake model server; a context manager that serves on 127.0.0.1 in a thread.

    `reply` is the answer text, or a function of the request body that returns it.
    A streamed answer is sent in `chunks` pieces with `chunk_delay` seconds before each,
    so a reply takes about ``chunks * chunk_delay`` seconds in total.
    """

    def __init__(
        self,
        reply: Reply = DEFAULT_REPLY,
        *,
        chunk_delay: float = 0.0,
        chunks: int = 3,
        model: str = DEFAULT_MODEL,
        title: str = DEFAULT_TITLE,
        port: int = 0,
        record_path: Path | None = None,
    ) -> None:
        self.reply = reply
        self.chunk_delay = chunk_delay
        self.chunks = chunks
        self.model = model
        self.title = title
        self.record_path = record_path
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The value for the provider's ``options.baseURL``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self, *, include_titles: bool = False) -> list[RecordedRequest]:
        """Chat completion requests, without title generation unless asked."""
        return [
            r for r in self.requests if r.is_chat and (include_titles or not r.is_title)
        ]

    def wait_for_chat(self, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.chat_requests()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fake model got fewer than {count} prompts")
            time.sleep(0.05)

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fakellm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            if self.record_path is not None:
                line = {
                    "method": request.method,
                    "path": request.path,
                    "body": request.raw.decode("utf-8", "replace"),
                }
                with self.record_path.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(line) + "\n")

    def answer_text(self, body: dict[str, Any]) -> str:
        if is_title_request(body):
            return self.title
        if callable(self.reply):
            return self.reply(body)
        return self.reply


def _handler_for(llm: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Each answer closes its connection, which is how a streamed body ends under
        # HTTP/1.0 and keeps the server free of keep-alive bookkeeping.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            llm.record(self._recorded(b""))
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(200, _models_body(llm.model))
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            llm.record(self._recorded(raw))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send_json(400, {"error": {"message": "body is not JSON"}})
                return
            text = llm.answer_text(body)
            try:
                if body.get("stream"):
                    self._stream(body, text)
                else:
                    self._send_json(200, _completion_body(body, text, llm.model))
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (an aborted session); nothing is left to answer.
                pass

        def _recorded(self, raw: bytes) -> RecordedRequest:
            return RecordedRequest(
                method=self.command,
                path=self.path,
                raw=raw,
                headers={k.lower(): v for k, v in self.headers.items()},
            )

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict[str, Any], text: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            # Titles are not worth waiting for; only the agent's reply streams slowly.
            delay = 0.0 if is_title_request(body) else llm.chunk_delay
            for event, is_content in _stream_events(body, text, llm.model, llm.chunks):
                if is_content and delay:
                    time.sleep(delay)
                self.wfile.write(f"data: {event}\n\n".encode())
                self.wfile.flush()

    return Handler


def _models_body(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "fake"}],
    }


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(message_text(m)) for m in body.get("messages", [])) // 4 + 1
    completion = len(text) // 4 + 1
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion_body(body: dict[str, Any], text: str, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(body, text),
    }


def _stream_events(
    body: dict[str, Any], text: str, model: str, chunks: int
) -> Iterator[tuple[str, bool]]:
    """Server-sent event payloads, each with whether it carries reply text."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", model),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return json.dumps({**base, "choices": [choice]}, ensure_ascii=False)

    yield chunk({"role": "assistant", "content": ""}), False
    for piece in split_reply(text, chunks):
        if piece:
            yield chunk({"content": piece}), True
    yield chunk({}, "stop"), False
    yield json.dumps({**base, "choices": [], "usage": _usage(body, text)}), False
    yield "[DONE]", False


try:
    import pytest
except ImportError:  # the process form runs where pytest is not installed
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def fake_llm() -> Iterator[FakeLLM]:
        """A running fake model that echoes the last user message."""
        with FakeLLM(reply=echo_last_user_message) as llm:
            yield llm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    reply = parser.add_mutually_exclusive_group()
    reply.add_argument("--reply", default=DEFAULT_REPLY, help="the answer text")
    reply.add_argument(
        "--echo", action="store_true", help="answer with the last user message"
    )
    parser.add_argument("--chunk-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--title", default=DEFAULT_TITLE)
    parser.add_argument(
        "--record", type=Path, help="append each request as a JSON line to this file"
    )
    args = parser.parse_args(argv)

    llm = FakeLLM(
        reply=echo_last_user_message if args.echo else args.reply,
        chunk_delay=args.chunk_delay,
        chunks=args.chunks,
        model=args.model,
        title=args.title,
        port=args.port,
        record_path=args.record,
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with llm:
        print(llm.base_url, flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
