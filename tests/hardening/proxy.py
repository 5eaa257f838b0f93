"""A TCP proxy on loopback that can break the connections it carries: the cloud "failing
mid-stream" between an SDK and its emulator, without touching either of them."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class FaultyProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``.

    While ``cut_after`` is set, a connection that has carried more than that many bytes
    towards the upstream is reset on both sides, or, with ``answer`` set, cut from the
    upstream and answered with those raw bytes (the rest of the request is read and
    dropped, so the client gets to read the answer). A large upload dies mid-body while
    small requests (an abort, a delete) still pass. ``rewrite`` swaps equal-length byte
    strings in what comes back: the upstream's own address in a resumable-upload
    ``Location``, so that the next chunks come through the proxy too."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.cut_after: int | None = None
        self.rewrite: tuple[bytes, bytes] | None = None
        self.answer: bytes | None = None
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, towards_upstream: bool) -> None:
        carried = 0
        try:
            while data := source.recv(65536):
                carried += len(data)
                limit = self.cut_after
                if towards_upstream and limit is not None and carried > limit:
                    self.cuts += 1
                    self._reset(sink)
                    if self.answer is not None:
                        self._answer_and_drain(source, self.answer)
                    self._reset(source)
                    return
                if not towards_upstream and self.rewrite is not None:
                    data = data.replace(*self.rewrite)
                sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            self._reset(source, sink)

    @staticmethod
    def _answer_and_drain(client: socket.socket, answer: bytes) -> None:
        with contextlib.suppress(OSError):
            client.sendall(answer)
            client.settimeout(10)
            while client.recv(65536):
                pass

    def _reset(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()


class DeadStore:
    """A TCP listener on 127.0.0.1 that accepts every connection and, with ``reset``, resets
    it at once; otherwise holds it open and never reads nor answers (a hung store).
    ``accepted`` counts the connections, so a test can count a client's attempts."""

    def __init__(self, *, reset: bool) -> None:
        self._reset = reset
        self._server = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> DeadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.close()
        for sock in self._held:
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self._server.accept()
                self.accepted += 1
                if self._reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                else:
                    self._held.append(sock)
