"""A loopback HTTP/1.1 proxy that injects faults between an S3 client and the server.

Per request it either forwards it untouched, answers ``500 InternalError`` itself (closing the
connection), or forwards it and then cuts the response after a random number of bytes with a
TCP reset -- the failures a real network and an overloaded server produce. Request bodies are
framed by Content-Length or chunked encoding; responses are relayed raw (clients do not pipeline).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from dataclasses import dataclass, field

ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>injected by FaultyProxy</Message></Error>"
)
INJECTED_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
    + f"Content-Length: {len(ERROR_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + ERROR_BODY
)


@dataclass
class FaultCounts:
    requests: int = 0
    errors_500: int = 0
    resets: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _reset(sock: socket.socket) -> None:
    """Abort the connection: the peer sees it cut (EOF mid-message, then RST on any further data).

    shutdown() first: a bare close() does not wake another thread blocked in recv() on the same
    socket, so nothing would reach the peer until its read timeout.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Reader:
    """Buffered reads from a socket: whole header blocks and exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buffer:
            if not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self._fill():
                raise ConnectionError("client closed mid-body")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


class FaultyProxy:
    def __init__(self, upstream_port: int, *, fault_rate: float = 0.1, seed: int = 1234) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.fault_rate = fault_rate
        self.random = random.Random(seed)
        self.random_lock = threading.Lock()
        self.counts = FaultCounts()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self.listener.close()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide(self) -> tuple[str, int]:
        with self.random_lock:
            roll = self.random.random()
            cut_after = self.random.randint(0, 96 * 1024)
        with self.counts.lock:
            self.counts.requests += 1
            if roll < self.fault_rate / 2:
                self.counts.errors_500 += 1
                return "500", 0
            if roll < self.fault_rate:
                self.counts.resets += 1
                return "cut", cut_after
        return "pass", 0

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        # Bytes of the current response still allowed through before a reset (-1: no cut armed).
        budget = {"left": -1}
        pump = threading.Thread(target=self._pump_responses, args=(upstream, client, budget), daemon=True)
        pump.start()
        reader = _Reader(client)
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                if head is None:
                    break
                action, cut_after = self._decide()
                if action == "500":
                    client.sendall(INJECTED_500)
                    break
                budget["left"] = cut_after if action == "cut" else -1
                upstream.sendall(head)
                self._forward_body(head, reader, upstream)
        except OSError:
            pass
        finally:
            _reset(client)
            _reset(upstream)

    @staticmethod
    def _forward_body(head: bytes, reader: _Reader, upstream: socket.socket) -> None:
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = reader.until(b"\r\n")
                if size_line is None:
                    raise ConnectionError("client closed mid-chunk")
                upstream.sendall(size_line)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:  # trailer lines (checksums), then an empty line
                    while (trailer := reader.until(b"\r\n")) not in (None, b"\r\n"):
                        upstream.sendall(trailer or b"")
                    upstream.sendall(b"\r\n")
                    return
                upstream.sendall(reader.exactly(size + 2))
        length = int(headers.get("content-length", "0") or 0)
        # Relayed piecewise; an "Expect: 100-continue" answer reaches the client through the pump.
        while length > 0:
            piece = reader.exactly(min(length, 1 << 20))
            upstream.sendall(piece)
            length -= len(piece)

    @staticmethod
    def _pump_responses(upstream: socket.socket, client: socket.socket, budget: dict[str, int]) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                left = budget["left"]
                if left >= 0 and len(data) > left:
                    client.sendall(data[:left])
                    budget["left"] = -1
                    _reset(client)
                    _reset(upstream)
                    return
                if left >= 0:
                    budget["left"] = left - len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
