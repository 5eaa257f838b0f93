"""A loopback TCP proxy that makes a path look like a real one to a cloud store: a fixed
round-trip latency and a bandwidth cap per connection, each way.

Every connection to ``127.0.0.1:<port>`` is forwarded to ``upstream``. Each byte arrives
``rtt / 2`` after it was sent, once the connection's link (``rate`` bytes a second in each
direction) has carried the bytes before it; a new connection costs one ``rtt`` before its
first byte (the TCP handshake). What is in transit is bounded (about a bandwidth-delay
product plus 1 MiB a direction), so a sender feels the cap as TCP back-pressure, as on a
real link, rather than filling the proxy's memory.

``rewrite`` swaps one byte string for another of the same length in what comes back: the
upstream's own address in a resumable-upload ``Location`` (fake-gcs-server names itself
there), so that the next chunks come through the proxy too.

Runs its own event loop in a thread: ``with LatencyProxy(("127.0.0.1", 9000)) as proxy:
proxy.url``. Standalone: ``python -m benchmarks.latency_proxy UPSTREAM_PORT [LISTEN_PORT]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
from types import TracebackType

READ_SIZE = 64 * 1024
IN_TRANSIT = 1024 * 1024
"""Bytes a direction holds beyond what the link carries in one round trip."""


class LatencyProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        rtt: float = 0.010,
        rate: float = 25e6,
        port: int = 0,
        rewrite: tuple[bytes, bytes] | None = None,
    ) -> None:
        if rewrite is not None and len(rewrite[0]) != len(rewrite[1]):
            raise ValueError("rewrite swaps strings of one length: a body's Content-Length stays right")
        self.upstream = upstream
        self.rewrite = rewrite
        self.rtt = rtt
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._started = threading.Event()
        self._server: asyncio.Server | None = None
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        """The connections' tasks: held, so that none is collected while it runs."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        async def shut_down() -> None:
            if self._server is not None:
                self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut_down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._connection, sock=self._listener)

        self._loop.run_until_complete(start())
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Cancelled at shut-down, it ends quietly (asyncio's streams would log the cancellation).
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(client_reader, client_writer)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            await asyncio.sleep(self.rtt)  # the handshake's round trip
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, server_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(
                self._direction(client_reader, server_writer),
                self._direction(server_reader, client_writer, self.rewrite),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _direction(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rewrite: tuple[bytes, bytes] | None = None,
    ) -> None:
        """One way of one connection: a delay line behind a link of ``rate`` bytes a second.
        (A ``rewrite`` split across two reads is missed: answers' heads come in one read.)"""
        loop = asyncio.get_running_loop()
        one_way = self.rtt / 2
        limit = max(2, int((self.rate * self.rtt + IN_TRANSIT) / READ_SIZE))
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=limit)

        async def receive() -> None:
            link_free = 0.0
            try:
                while data := await reader.read(READ_SIZE):
                    if rewrite is not None:
                        data = data.replace(*rewrite)
                    # Sent once the link is free, taking len / rate on it; arrives one_way later.
                    link_free = max(loop.time(), link_free) + len(data) / self.rate
                    await line.put((link_free + one_way, data))
            finally:
                await line.put((max(loop.time(), link_free) + one_way, b""))

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        receiving = asyncio.ensure_future(receive())
        try:
            await deliver()
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await receiving


def main(argv: list[str]) -> None:
    upstream_port = int(argv[0])
    port = int(argv[1]) if len(argv) > 1 else 0
    with LatencyProxy(("127.0.0.1", upstream_port), port=port) as proxy:
        print(
            f"{proxy.url} -> 127.0.0.1:{upstream_port} (10 ms round trip, 25 MB/s a connection)", flush=True
        )
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
