"""The one plain-text response both middlewares send (a refusal, a 404...)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, List, MutableMapping

__all__ = ("respond",)

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def respond(send: Send, prefix: str, status: int, body: bytes, headers: List[Any]) -> None:
    """A plain-text response: ``http.response.*``, or the denial ``websocket.http.response.*``."""
    await send({
        "type": prefix + ".start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            *headers,
        ],
    })
    await send({"type": prefix + ".body", "body": body})
