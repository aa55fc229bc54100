"""A threaded HTTPS server on pyOpenSSL that hands each request (with the client's chain) to a dispatcher."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from cryptography import x509
from OpenSSL import SSL

from lab.cloud.http import Request, Response

LOG = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
MAX_BODY = 4 * 1024 * 1024


class Dispatcher(Protocol):
    def new_request_id(self) -> str: ...

    def dispatch(self, request: Request) -> Response | None:
        """The response to send, or ``None`` to drop the connection without answering."""


class _TlsReader(io.RawIOBase):
    """Raw reader over a pyOpenSSL connection so ``BaseHTTPRequestHandler`` can buffer it."""

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._connection.recv_into(buffer)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return 0


class _TlsWriter(io.RawIOBase):
    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._connection.sendall(bytes(data))
        return len(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LabHttpServer
    request: SSL.Connection  # type: ignore[assignment]

    def setup(self) -> None:
        self.connection = self.request  # type: ignore[assignment]
        self.request.do_handshake()
        self.rfile = io.BufferedReader(_TlsReader(self.request))  # type: ignore[assignment]
        self.wfile = _TlsWriter(self.request)  # type: ignore[assignment]
        self.client_chain = self._peer_chain()

    def finish(self) -> None:
        with contextlib.suppress(SSL.Error):
            self.request.shutdown()

    def _peer_chain(self) -> list[x509.Certificate]:
        # On the server side OpenSSL's peer chain may omit the leaf; put it first exactly once.
        leaf = self.request.get_peer_certificate(as_cryptography=True)
        sent = self.request.get_peer_cert_chain(as_cryptography=True) or []
        if leaf is None:
            return list(sent)
        return [leaf, *[cert for cert in sent if cert != leaf]]

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s %s", self.server.service_name, format % args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        dispatcher = self.server.dispatcher
        request = Request.build(
            self.command, self.path, self.headers, body, dispatcher.new_request_id(), self.client_chain
        )
        response = dispatcher.dispatch(request)
        if response is None:
            self._drop()
            return
        self.send_response(response.status)
        headers = {"x-ms-request-id": request.request_id, **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    def _drop(self) -> None:
        """Close the TCP connection without a TLS close_notify or HTTP answer (fault injection)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.request.sock_shutdown(socket.SHUT_RDWR)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _handle


class LabHttpServer(socketserver.ThreadingTCPServer):
    """HTTPS on 127.0.0.1 only; port 0 picks a free port (read it back from ``port``)."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, service_name: str, port: int, context: SSL.Context, dispatcher: Dispatcher) -> None:
        self.service_name = service_name
        self.context = context
        self.dispatcher = dispatcher
        self._connections: set[SSL.Connection] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        raw, address = self.socket.accept()
        connection = SSL.Connection(self.context, raw)
        connection.set_accept_state()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        with contextlib.suppress(OSError):
            request.sock_shutdown(socket.SHUT_RDWR)
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Handshake failures and clients hanging up are normal for a test server; keep them out of stderr.
        LOG.debug("%s: connection from %s ended with an error", self.service_name, client_address, exc_info=True)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.sock_shutdown(socket.SHUT_RDWR)


class ThreadedServer:
    """Runs a ``LabHttpServer`` on a daemon thread: ``start()`` returns once it accepts, ``stop()`` joins."""

    def __init__(self, server: LabHttpServer) -> None:
        self.server = server
        self._thread = threading.Thread(target=self._serve, name=f"lab-{server.service_name}", daemon=True)
        self._ready = threading.Event()

    def _serve(self) -> None:
        self._ready.set()
        self.server.serve_forever(poll_interval=0.05)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.close_all_connections()
        self.server.server_close()
        self._thread.join(5)
