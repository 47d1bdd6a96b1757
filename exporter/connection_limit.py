"""Bounds on HTTP connections: how many at once, how long one may take to send its request, and to finish.

A client that connects and sends nothing (or one byte every few seconds) costs us a thread and a file
descriptor. Without bounds, a thousand such clients exhaust the usual 1,024 descriptors and every
scrape fails. So connections are counted; one still waiting for its request headers is closed after
``header_timeout``, any one after ``request_timeout``; and when ``max_connections`` are open, a new
connection closes the oldest of those still waiting for their headers, so scrapes keep being answered
while idle clients hold every slot. A connection is refused only when every slot is busy answering.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
HEADER_TIMEOUT_S = 10.0  # connect to the end of the request headers, TLS handshake included
REQUEST_TIMEOUT_S = 60.0  # connect to the end of the response
_WARN_EVERY_S = 60.0


@dataclass(slots=True)
class _Connection:
    deadline: float
    waiting: bool  # still waiting for the request headers: may be closed to make room


class ConnectionLimiter:
    """Counts open connections and closes those past their deadline or evicted to make room.

    Closing means ``shutdown()`` on the socket: the thread serving it wakes from its blocked read or
    write and ends, and closes the descriptor itself (closing it from here could close a reused one).
    """

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[socket.socket, _Connection] = {}  # insertion order: oldest first
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._warned_at = -_WARN_EVERY_S

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._open)

    def rejected(self) -> dict[str, int]:
        """Connections closed or refused by the bounds so far, by reason (served as a self-metric)."""
        with self._lock:
            return {"evicted": self.evicted, "refused": self.refused, "timeout": self.timed_out}

    def admit(self, sock: socket.socket) -> bool:
        """Count a new connection, closing the oldest waiting one if all slots are taken.

        False when every slot is busy answering a request: the caller closes the new connection.
        """
        now = self.clock()
        with self._lock:
            self._expire(now)
            if len(self._open) >= self.max_connections:
                victim = next((s for s, c in self._open.items() if c.waiting), None)
                if victim is None:
                    self.refused += 1
                    self._warn(now, "refused a connection")
                    return False
                del self._open[victim]
                self.evicted += 1  # counted before the client can see it
                _shut(victim)
                self._warn(now, "closed the oldest connection still waiting for its request")
            self._open[sock] = _Connection(now + self.header_timeout_s, waiting=True)
            return True

    def request_read(self, sock: socket.socket) -> None:
        """The connection's request headers are in: it is busy now and keeps its slot until done."""
        with self._lock:
            conn = self._open.get(sock)
            if conn is not None and conn.waiting:
                conn.waiting = False
                conn.deadline += self.request_timeout_s - self.header_timeout_s

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def expire(self) -> None:
        """Close every connection past its deadline (called from the accept loop twice a second)."""
        now = self.clock()
        with self._lock:
            self._expire(now)

    def _expire(self, now: float) -> None:
        late = [s for s, c in self._open.items() if c.deadline <= now]
        self.timed_out += len(late)  # counted before the clients can see it
        for sock in late:
            del self._open[sock]
            _shut(sock)

    def _warn(self, now: float, what: str) -> None:
        # Once a minute at most: a flood of connections must not become a flood of log lines.
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "HTTP connection limit (%d) reached: %s (%d closed, %d refused so far)",
                self.max_connections,
                what,
                self.evicted,
                self.refused,
            )


def _shut(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops the TLS object that the
    # serving thread may be using at this moment.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
