"""A small chat-completions server on 127.0.0.1 (stdlib, threaded) for tests, the benchmark and offline demos.

It speaks enough of the OpenAI protocol for the `openai` client: POST .../chat/completions returns a
`chat.completion` object. What it answers is decided by `reply(body, n) -> Reply` (n counts requests from 0),
so a test can script 429s, 500s, slow or malformed answers. It records every request (path, headers, body) and
how many were in flight at once, which is how the tests see retries, resumption and concurrency from the
server's side.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

DEFAULT_ANSWER = "User: What kind of image is this?\n\nAssistant: This is a chest X-ray.\n\nUser: Is there a nodule?\n\nAssistant: No, the lungs are clear."


@dataclass
class Reply:
    """One scripted answer: a chat completion with `content`, or `status` with `body` (dict or raw text)."""

    content: str | None = DEFAULT_ANSWER
    status: int = 200
    body: dict | str | None = None  # overrides the completion built from `content`
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


def completion_body(content: str | None, model: str) -> dict:
    return {
        "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


class LocalChatServer:
    """`with LocalChatServer(reply) as server:` ... `server.base_url` is http://127.0.0.1:PORT/v1."""

    def __init__(self, reply: Callable[[dict, int], Reply] | None = None, delay: float = 0.0):
        self.reply = reply or (lambda body, n: Reply(delay=delay))
        self.requests: list[dict] = []  # {"path", "headers", "body"} in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "LocalChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do

            def log_message(self, *args):  # quiet: tests read `server.requests` instead
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with server._lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if not self.path.split("?")[0].endswith("/chat/completions"):
                        reply = Reply(status=404, body={"error": {"message": f"no route {self.path}"}})
                    else:
                        reply = server.reply(body, n)
                    time.sleep(reply.delay)
                    payload = reply.body if reply.body is not None else completion_body(reply.content, body.get("model", ""))
                    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to do
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
