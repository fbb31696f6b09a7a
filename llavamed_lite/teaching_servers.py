"""Stand-ins for teaching and tests, not part of the pipeline: two small local servers on 127.0.0.1
(stdlib http.server, threaded) that play the remote services the pipeline talks to, so the notebooks
can show what goes wrong out there (notebook 02: a flaky PMC mirror; notebook 03: an
OpenAI-compatible model endpoint) and the tests and benchmarks can script it.

`FaultyServer` serves a folder the way a flaky mirror would:

    with FaultyServer(folder, faults={"PMC1.tar.gz": "404", "PMC2.tar.gz": "truncate"}) as server:
        server.url("PMC2.tar.gz")

Faults per file name: "404"; "500" (always) or "500:N" (the first N requests); "slow:S" (sleep S
seconds before answering); "truncate" (the first full response sends half the body, then closes).
Range requests are honoured (206), so resumes can be tested; `server.requests` records (path, Range
header) of every GET.

`LocalChatServer` speaks enough of the OpenAI protocol for the `openai` client: POST
.../chat/completions returns a `chat.completion` object. What it answers is decided by `reply(body,
n) -> Reply` (n counts requests from 0), so a test can script 429s, 500s, slow or malformed answers.
It records every request (path, headers, body) and how many were in flight at once, which is how the
tests see retries, resumption and concurrency from the server's side.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote


class FaultyServer:
    """`with FaultyServer(folder, faults) as server:` ... `server.url(name)`: a flaky mirror of
    `folder`."""

    def __init__(self, root: str | Path, faults: dict[str, str] | None = None):
        self.root = Path(root).resolve()
        self.faults = dict(faults or {})
        self.requests: list[tuple[str, str | None]] = []
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def gets(self, name: str) -> int:
        """How many GET requests reached `name`."""
        return sum(1 for p, _ in self.requests if p == name)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        name = unquote(h.path.split("?")[0].lstrip("/"))
        with self._lock:
            self.requests.append((name, h.headers.get("Range")))
            self._hits[name] = hit = self._hits.get(name, 0) + 1
        fault = self.faults.get(name, "")
        if fault.startswith("slow:"):
            time.sleep(float(fault.split(":")[1]))
        if fault == "404":
            return h.send_error(404)
        if fault == "500" or (fault.startswith("500:") and hit <= int(fault.split(":")[1])):
            return h.send_error(500)
        path = (self.root / name).resolve()
        if not path.is_file() or self.root not in path.parents:
            return h.send_error(404)
        data = path.read_bytes()
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.end_headers()
                return
        body = data[start:]
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if fault == "truncate" and not start and hit == 1:
            body = body[: len(body) // 2]
            h.close_connection = True
        try:
            h.wfile.write(body)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


# ---- a chat-completions endpoint ------------------------------------------------------------------------------
DEFAULT_ANSWER = ("User: What kind of image is this?\n\nAssistant: This is a chest X-ray.\n\n"
                  "User: Is there a nodule?\n\nAssistant: No, the lungs are clear.")


@dataclass
class Reply:
    """One scripted answer: a chat completion with `content`, or `status` with `body` (dict or raw
    text)."""

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
                    payload = reply.body
                    if payload is None:
                        payload = completion_body(reply.content, body.get("model", ""))
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
