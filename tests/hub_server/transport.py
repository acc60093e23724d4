"""HTTP plumbing: the request handler that turns raw HTTP into ``_Request``s for the hub's router and writes the
``_Response``s back (streaming blobs, breaking connections on injected failures), and the threaded servers."""

from __future__ import annotations

import http.server
import socket
import struct
import threading
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from .model import FailureRule, HubError, RequestRecord, _json, _Request, _Response


if TYPE_CHECKING:
    from .server import HubServer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        pass

    def setup(self) -> None:
        super().setup()
        try:  # avoid Nagle + delayed-ACK stalls (~40 ms per request on loopback)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conn_lock:  # type: ignore[attr-defined]
            self.server.conns.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        with self.server.conn_lock:  # type: ignore[attr-defined]
            self.server.conns.discard(self.connection)  # type: ignore[attr-defined]
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # ---------------------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        role: str = self.server.role  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        user: str | None = None
        try:
            body = self._read_body()
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
            auth = self.headers.get("Authorization")
            if role == "hub" and auth:
                user = hub._user_for_auth_header(auth)
            req = _Request(
                method=method,
                segs=segs,
                query=parse_qs(split.query, keep_blank_values=True),
                body=body,
                user=user,
                base=f"http://{host}",
                headers=self.headers,
                server=role,
            )
            resp = hub._route(req)
        except HubError as e:
            resp = hub._error_response(e)
        except Exception:  # pragma: no cover - surfaced through hub.errors
            hub.errors.append(traceback.format_exc())
            resp = _json({"error": "Internal Error (fake hub)"}, status=500)
        hub._log(
            RequestRecord(
                method, "/" + "/".join(segs), user, resp.status, split.query, role, self.headers.get("Range")
            )
        )
        self._send(method, resp)

    def _send(self, method: str, resp: _Response) -> None:
        headers = dict(resp.headers)
        if resp.file is not None:
            headers["Content-Length"] = str(resp.file[2])
        else:
            headers["Content-Length"] = str(len(resp.body))
        rid = self.headers.get("X-Request-Id") or self.headers.get("X-Amzn-Trace-Id")
        if rid:
            headers.setdefault("X-Request-Id", rid)
        failure = resp.failure  # "drop"/"reset" only: "error" rules are turned into a 500 by the route
        self.send_response(resp.status)
        for key, value in headers.items():
            self.send_header(key, value)
        if failure is not None:
            self.send_header("Connection", "close")
        # Like end_headers(), but headers and an in-memory body go out in a single send().
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        if method == "HEAD":
            self.wfile.write(head)
            return
        if resp.file is None:
            self.wfile.write(head + resp.body)
            return
        self.wfile.write(head)
        self._stream_file(resp.file, failure)
        if failure is not None:
            self._break_connection(failure)

    def _stream_file(self, file: tuple[str, int, int], failure: FailureRule | None) -> None:
        """Send ``length`` bytes of the blob from ``start``; only part of them when a failure rule applies."""
        path, start, length = file
        limit = length
        if failure is not None:
            if failure.after_bytes is not None:
                limit = min(length, failure.after_bytes)
            else:
                limit = length // 2 if start == 0 else 0
        with open(path, "rb") as f:
            f.seek(start)
            remaining = limit
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _break_connection(self, failure: FailureRule) -> None:
        """Break the connection mid-file: a FIN ("drop") or a TCP RST ("reset")."""
        self.close_connection = True
        try:
            self.wfile.flush()
            if failure.mode == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, hub: HubServer, role: str, host: str):
        self.hub = hub
        self.role = role
        self.conns: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def handle_error(self, request, client_address) -> None:  # connection resets etc. are expected in tests
        pass

    def close_all_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
