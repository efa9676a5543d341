"""The answer to a refused HTTP connection: ``503 Service Unavailable`` with ``Retry-After``, before any handler runs.

Shared by the integrations that speak HTTP over a transport of the manager's
(``conntable.websockets``, ``conntable.aiohttp``): a protocol's
``connection_rejected`` hook calls :func:`answer_unavailable`, and the
connection gets the response once its request head arrived; the server's own
code never sees it.
"""

from __future__ import annotations

import asyncio
from typing import Optional

__all__ = ("unavailable_response", "answer_unavailable")


def unavailable_response(retry_after: int) -> bytes:
    """The raw HTTP response to an opening handshake the breaker refused."""
    body = b"Server busy: too many connections. Retry later.\n"
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Retry-After: {retry_after}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class _Refusal(asyncio.Protocol):
    """Stands in front of the manager's adapter on a refused connection until the 503 is out.

    The manager's adapter discards what a refused connection sends, so the
    request's arrival can only be seen in front of it: this protocol takes
    the adapter's place on the transport (``set_protocol``, on refused
    connections only, never on the hot path), watches for the end of the
    request head, writes the response, and passes every call on to the
    adapter, so the manager's accounting (activity, ``connection_lost``, the
    abort after ``close_timeout``) is unchanged.
    """

    #: Answer anyway once this much arrived without the end of a request head.
    HEAD_LIMIT = 16 * 1024

    def __init__(self, adapter: asyncio.Protocol, transport: asyncio.WriteTransport, response: bytes) -> None:
        self._adapter = adapter
        self._transport = transport
        self._response: Optional[bytes] = response
        self._head = bytearray()

    @classmethod
    def answer(cls, transport: asyncio.BaseTransport, response: bytes) -> None:
        stream: asyncio.Transport = transport  # type: ignore[assignment]
        stream.set_protocol(cls(stream.get_protocol(), stream, response))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._adapter.data_received(data)
        if self._response is None:
            return
        self._head += data
        if b"\r\n\r\n" in self._head or len(self._head) >= self.HEAD_LIMIT:
            self._send_response()

    def _send_response(self) -> None:
        response, self._response, self._head = self._response, None, bytearray()
        transport = self._transport
        transport.write(response)  # type: ignore[arg-type]
        # Shut only the write side: closing with the request unread could
        # make the kernel answer with a reset that destroys the response.
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def eof_received(self) -> Optional[bool]:
        return self._adapter.eof_received()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._adapter.connection_lost(exc)

    def pause_writing(self) -> None:
        self._adapter.pause_writing()

    def resume_writing(self) -> None:
        self._adapter.resume_writing()


def answer_unavailable(transport: asyncio.BaseTransport, response: bytes) -> None:
    """Answer the refused connection on ``transport`` with ``response`` once its request head is in."""
    _Refusal.answer(transport, response)
