"""A local HTTP server that serves a folder the way a flaky mirror would: for the download tests, the notebook's
demonstration and the benchmark (stdlib http.server on 127.0.0.1, in a thread).

    with FaultyServer(folder, faults={"PMC1.tar.gz": "404", "PMC2.tar.gz": "truncate"}) as server:
        server.url("PMC2.tar.gz")

Faults per file name: "404"; "500" (always) or "500:N" (the first N requests); "slow:S" (sleep S seconds before
answering); "truncate" (the first full response sends half the body, then closes). Range requests are honoured
(206), so resumes can be tested; `server.requests` records (path, Range header) of every GET.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class FaultyServer:
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
