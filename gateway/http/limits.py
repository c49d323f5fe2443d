"""Limits on what a client controls, checked before the work: header size (431), body size (413,
from Content-Length before any of the body is read, and again while it streams), and a deadline for
each chunk of a slow body (408). Connection count and keep-alive are uvicorn's own settings (see
gateway/__main__.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.domain.errors import GatewayError


class BodyTooLarge(GatewayError):
    """The body is larger than ``[http] max_body_mb``."""

    status = 413


class BodyTimeout(GatewayError):
    """The client stopped sending its body for longer than ``[http] body_read_timeout_seconds``."""

    status = 408


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = sum(len(k) + len(v) for k, v in headers)
        if size > self.max_header_bytes:
            await _reject(send, 431, "RequestHeaderFieldsTooLarge", f"request headers are {size} bytes; the "
                          f"limit is {self.max_header_bytes} ([http] max_header_kb)")
            return
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reject(send, 413, "BodyTooLarge", self._too_large(int(declared)))
            return
        received = 0
        more = True  # the body is not complete: each chunk has a deadline

        async def limited() -> Message:
            nonlocal received, more
            if not more:  # after the body, a receive waits for the client to go (no deadline)
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout):  # no extra task per receive, unlike wait_for
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"no part of the body arrived for {self.read_timeout:g} s "
                                  "([http] body_read_timeout_seconds)") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self._too_large(received))
            else:
                more = False
            return message

        await self.app(scope, limited, send)

    def _too_large(self, size: int) -> str:
        return (f"the body is {'at least ' if size else ''}{size} bytes; the limit is {self.max_body_bytes} "
                "([http] max_body_mb)")


class FeedbackRate:
    """``POST /feedback`` past its caller's rate (the token's, else the client address's) is answered
    429 here, before routing, body parsing or any credential check: a flood of labels, refused or
    not, costs the event loop that also serves predictions as little as an answer can."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/feedback" and scope["method"] == "POST":
            services = getattr(scope["app"].state, "services", None)
            if services is not None:
                authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"),
                                     None)
                client = scope["client"][0] if scope.get("client") else ""
                wait = services.gate.rate(authorization, client)
                if wait is not None:
                    while (await receive()).get("more_body"):  # a label is small: read it, keep the connection
                        pass
                    await _reject(send, 429, "TooManyLabels", f"{services.gate.describe_limit(authorization)}; "
                                  f"retry in {wait} s", [(b"retry-after", str(wait).encode())], close=False)
                    return
        await self.app(scope, receive, send)


async def _reject(send: Send, status: int, name: str, message: str,
                  extra: list[tuple[bytes, bytes]] | None = None, close: bool = True) -> None:
    """An error answered here; ``close``: the body was not read, so the connection cannot go on."""
    body = json.dumps({"error": name, "message": message}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          *([(b"connection", b"close")] if close else []), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
