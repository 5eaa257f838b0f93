"""Helpers the hardening tests share: hand-built multipart bodies, an in-process ASGI call
that delivers a body in chosen chunks, and a raw-socket HTTP exchange for inputs httpx
will not produce (bad framing, a client that vanishes mid-body)."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.asgi import post_scope

BOUNDARY = "hardening-boundary-5f2c"
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


def quoted(value: str | bytes) -> bytes:
    """A header parameter value as a browser sends it (WHATWG: escape ``"``, CR, LF)."""
    raw = value.encode() if isinstance(value, str) else value
    return b'"' + raw.replace(b'"', b"%22").replace(b"\r", b"%0D").replace(b"\n", b"%0A") + b'"'


def file_part(
    name: str,
    filename: str | bytes,
    data: bytes,
    ctype: str = "application/octet-stream",
    *,
    raw_filename: bool = False,
) -> bytes:
    """One file part; ``raw_filename`` puts the bytes between the quotes unescaped."""
    value = filename if isinstance(filename, bytes) else filename.encode()
    shown = b'"' + value + b'"' if raw_filename else quoted(value)
    head = b'Content-Disposition: form-data; name="' + name.encode() + b'"; filename=' + shown + b"\r\n"
    return head + f"Content-Type: {ctype}\r\n\r\n".encode() + data


def text_part(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def form(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    """A complete multipart body of ``parts`` (each its headers, blank line and data)."""
    delimiter = b"--" + boundary.encode()
    return b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_post(
    app: ASGIApp,
    chunks: Sequence[bytes] | bytes,
    *,
    path: str = "/upload",
    ctype: str | bytes = content_type(),
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> Reply:
    """POST ``chunks`` to ``app`` in-process, each chunk one ``http.request`` message, as a
    server delivers what it reads from the socket."""
    pending = [chunks] if isinstance(chunks, bytes) else list(chunks)
    raw_ctype = ctype.encode("latin-1") if isinstance(ctype, str) else ctype
    scope = post_scope(path, [(b"host", b"test"), (b"content-type", raw_ctype), *headers])
    status, body = 0, bytearray()
    reply_headers: dict[str, str] = {}

    async def receive() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            reply_headers.update((k.decode().lower(), v.decode()) for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return Reply(status, reply_headers, bytes(body))


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    """``data`` split at ``points`` (clamped, deduplicated); never an empty list."""
    edges = sorted({min(max(p, 0), len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)] or [b""]


def raw_exchange(
    url: str,
    head: bytes,
    body: Iterable[bytes] = (),
    *,
    half_close: bool = False,
    timeout: float = 30.0,
) -> Reply:
    """Send ``head`` and ``body`` on a fresh socket and read the answer; status 0 if the
    server closed without one. ``half_close`` ends the client's side after the body, the
    way a client that gives up looks to the server.

    The body is sent from a thread: a server that refuses early answers and closes while
    the client is still sending, and the answer must be read rather than lost to EPIPE.
    """
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=timeout)
    try:

        def send_all() -> None:
            try:
                sock.sendall(head)
                for chunk in body:
                    sock.sendall(chunk)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server stopped reading: its answer says why

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
        except http.client.RemoteDisconnected:
            return Reply(0, {}, b"")
        finally:
            sender.join(timeout)
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        sock.close()


def request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
