"""How the double's daemons talk: systemd socket activation, and one JSON request per unix-socket connection.

The real services speak HTTP over these sockets; nothing outside the double calls the identity services' sockets,
so the double keeps their protocol minimal (lab/README.md). The edge daemon's management API is HTTP, because
``iotedge`` calls it (see edged.py).
"""

from __future__ import annotations

import json
import os
import socket

SD_LISTEN_FDS_START = 3


def activated_sockets() -> dict[str, socket.socket]:
    """The listening sockets systemd passed (LISTEN_FDS / LISTEN_FDNAMES), by name."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    count = int(os.environ.get("LISTEN_FDS", "0"))
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    sockets = {}
    for index in range(count):
        name = names[index] if index < len(names) and names[index] else str(index)
        sockets[name] = socket.socket(fileno=SD_LISTEN_FDS_START + index)
    return sockets


def serve_json(listener: socket.socket, handle) -> None:
    """Answer ``handle(request) -> response`` for each connection, forever.

    A client that connects and leaves without asking (``iotedge check`` probing the socket) gets no answer; a client
    that goes away before the answer is written costs nothing but that answer.
    """
    while True:
        connection, _address = listener.accept()
        with connection:
            try:
                line = _read_line(connection)
                if not line.strip():
                    continue
                try:
                    response = handle(json.loads(line))
                except Exception as error:  # a daemon answers every request, even a bad one
                    response = {"error": f"{type(error).__name__}: {error}"}
                connection.sendall(json.dumps(response).encode() + b"\n")
            except OSError:
                continue


def _read_line(connection: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def call(path: str, request: dict, timeout: float = 300) -> dict:
    """One request to a daemon's unix socket (systemd starts the daemon on connect)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(path)
        client.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(_read_line(client) or '{"error": "no answer"}')
