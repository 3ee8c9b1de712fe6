"""A loopback HTTP server for download tests: serves ``files`` (path -> bytes), 404 for anything else,
honours ``Range`` (unless ``ranges`` is off) and records every request as (path, Range header).
``custom`` (path -> function of the request handler) answers a path as a test wants: a misbehaving
server (a body cut short, endless, dripping; a wrong Content-Range; a redirect loop).

A Hugging Face hub mirror is the same server: a source ``{"hf_repo": "org/name", "endpoint": url}``
downloads ``url/org/name/resolve/<revision>/<file>``."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        data = server.files.get(self.path)
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path in server.custom:
            try:
                server.custom[self.path](self)
            except (BrokenPipeError, ConnectionResetError):  # the client hung up, as it should
                pass
            self.close_connection = True
            return
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and server.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve() -> Iterator[http.server.ThreadingHTTPServer]:
    """A running server on 127.0.0.1 with ``.url``, ``.files``, ``.requests``, ``.ranges`` and ``.custom``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.requests, server.ranges, server.custom = {}, [], True, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
