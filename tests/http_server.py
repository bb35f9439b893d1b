"""A loopback HTTP file server for download tests (no network beyond 127.0.0.1).

Serves the files of one directory, honours ``Range: bytes=`` requests (206 / 416) so resumable
downloads can be tested, records every request, and can simulate the two failures a downloader must
survive: a connection that drops mid-body and a server that ignores ``Range``.

>>> with LoopbackHTTPServer(tmp_path) as server:          # doctest: +SKIP
...     requests.get(server.url_for("model.pth"))
...     assert server.count("/model.pth") == 1
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it: ``range`` is the raw ``Range`` header (or None)."""

    method: str
    path: str
    range: str | None
    status: int


class LoopbackHTTPServer:
    """Serve ``directory`` on ``http://127.0.0.1:<free port>``; use as a context manager.

    Parameters
    ----------
    directory:
        Folder whose files (and sub-folders) are served; paths outside it are 404.
    support_range:
        If False the server ignores ``Range`` and always answers 200 with the whole file, like
        servers that cannot resume.
    drop_first_after:
        If set, the first GET of each path sends full headers (the whole ``Content-Length``) but
        closes the connection after this many body bytes: an interrupted download. Later GETs of
        the same path are served normally.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        support_range: bool = True,
        drop_first_after: int | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise NotADirectoryError(f"LoopbackHTTPServer: not a directory: {self.directory}")
        self.support_range = support_range
        self.drop_first_after = drop_first_after
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._dropped: set[str] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LoopbackHTTPServer:
        handler = type("_Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LoopbackHTTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses and bookkeeping -----------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LoopbackHTTPServer is not running (use it as a context manager)")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, relpath: str) -> str:
        return f"{self.url}/{quote(relpath.lstrip('/'))}"

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Number of requests so far, optionally only for one URL path (``"/a.pth"``) and/or method."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            )

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _should_drop(self, path: str) -> bool:
        with self._lock:
            if self.drop_first_after is None or path in self._dropped:
                return False
            self._dropped.add(path)
            return True


class _Handler(BaseHTTPRequestHandler):
    server_state: LoopbackHTTPServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _resolve(self, url_path: str) -> Path | None:
        root = self.server_state.directory
        target = (root / unquote(url_path).lstrip("/")).resolve()
        if target != root and root not in target.parents:
            return None
        return target if target.is_file() else None

    def _reply_empty(self, status: int, path: str, range_header: str | None, extra: dict[str, str]) -> None:
        self.server_state._record(RecordedRequest(self.command, path, range_header, status))
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, send_body: bool) -> None:
        state = self.server_state
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        target = self._resolve(path)
        if target is None:
            self._reply_empty(HTTPStatus.NOT_FOUND, path, range_header, {})
            return
        data = target.read_bytes()
        size = len(data)
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if range_header is not None and state.support_range:
            m = _RANGE_RE.match(range_header.strip())
            if m is None or (m.group(1) == "" and m.group(2) == ""):
                self._reply_empty(HTTPStatus.BAD_REQUEST, path, range_header, {})
                return
            if m.group(1) == "":  # suffix range: the last N bytes
                start = max(size - int(m.group(2)), 0)
            else:
                start = int(m.group(1))
                if m.group(2) != "":
                    end = min(int(m.group(2)), size - 1)
            if start >= size or start > end:
                unsatisfiable = {"Content-Range": f"bytes */{size}"}
                self._reply_empty(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, path, range_header, unsatisfiable
                )
                return
            status = HTTPStatus.PARTIAL_CONTENT
        body = data[start : end + 1]
        state._record(RecordedRequest(self.command, path, range_header, int(status)))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if state.support_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not send_body:
            return
        if state.drop_first_after is not None and state._should_drop(path):
            self.wfile.write(body[: state.drop_first_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
