"""Limits on what a client controls, over real sockets against a real gateway process."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from stack.processes import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_thousand_half_sent_bodies_are_answered_408_and_closed(start_gateway: Callable[..., GatewayProcess]) -> None:
    """Slow-loris: 1,000 connections each send the headers and 10 of 1,000 announced body bytes, then
    stall. Each gets 408 once the read timeout passes and its connection is closed; the gateway keeps
    answering others all along."""
    gw = start_gateway(http={"body_read_timeout_seconds": 2.0, "limit_concurrency": 1200})
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n").encode() + b'{"sepal_le'
    sockets: list[socket.socket] = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            s.sendall(head)
            sockets.append(s)
        opened = time.monotonic()
        with httpx.Client(base_url=gw.url, timeout=10) as http:  # others are served meanwhile
            assert http.get("/healthz").status_code == 200
            assert http.post("/predict", json={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,
                                               "petal_width": 0.2}).status_code == 200
        statuses: dict[str, int] = {}
        for s in sockets:
            s.settimeout(max(1.0, 20 - (time.monotonic() - opened)))
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
                closed = True  # the server closed the connection
            except TimeoutError:
                closed = False
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "none"
            key = f"{status}{'' if closed else ' still open'}"
            statuses[key] = statuses.get(key, 0) + 1
        waited = time.monotonic() - opened
        print(f"1,000 half-sent bodies: {statuses} within {waited:.1f} s (read timeout 2 s)")
        assert statuses == {"408": 1000}
    finally:
        for s in sockets:
            s.close()
