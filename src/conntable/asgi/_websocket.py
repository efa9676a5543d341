"""One WebSocket of the wrapped app: its registry record, and the ``receive``/``send`` the app gets.

The app is given wrapped ``receive`` and ``send`` callables: each message
through them is one ``touch`` on the manager's table (activity is any message
received or sent; the server's own ping/pong frames never reach ASGI, so they
do not count), and the wrappers follow the connection's state:

``connecting`` → (``websocket.accept``) → ``open`` → ``closing`` (a close was
sent, by the app or by conntable) → ``closed`` (the app was told
``websocket.disconnect``).

When conntable closes a WebSocket (idle, handshake or lifetime timeout,
shutdown, a broadcast that found it too slow) it sends the close frame
(``websocket.close``, 1001 by default; before the accept, a close that the
server turns into HTTP 403) from a task of the connection's own, and hands
the app's pending ``receive()`` a ``websocket.disconnect`` by cancelling the
task waiting in it and taking that cancellation back (``Task.uncancel``):
no extra task or future per ``receive()``. However the close started (by
conntable, the app, the client or the server), the manager's ``closing``
deadline follows: an app that has not returned ``close_timeout`` later is
cancelled (no timer of its own: the manager's wheel).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, MutableMapping, Optional

from conntable.aio import CloseReason

if TYPE_CHECKING:
    from ._link import Link

__all__ = ("WebSocket", "WebSocketClosed")

Message = MutableMapping[str, Any]

#: The close code and reason conntable sends, by why it closes.
GOING_AWAY = 1001
_CLOSE_TEXT = {
    CloseReason.IDLE: "idle timeout",
    CloseReason.HANDSHAKE: "handshake timeout",
    CloseReason.LIFETIME: "lifetime exceeded",
    CloseReason.SHUTDOWN: "server shutdown",
}


class WebSocketClosed(OSError):
    """``send()`` on a WebSocket that is closing or closed (as ASGI asks servers to raise: an OSError)."""


class WebSocket:
    """A live WebSocket of the wrapped app, as the registry (``middleware.websockets``) shows it.

    ``id`` (the manager's connection id), ``path``, ``client`` (the scope's
    ``(host, port)``), ``state`` (``connecting``, ``open``, ``closing``,
    ``closed``), ``scope``; ``opened_at`` and ``last_activity`` are loop
    times. :meth:`send_text`, :meth:`send_bytes`, :meth:`close`,
    :meth:`spawn` and :meth:`add_cleanup` act on it.
    """

    __slots__ = (
        "scope", "path", "client", "state", "link", "_receive", "_send", "_task",
        "_receiver", "_interrupting", "_close_code", "_closer", "_close_timeout", "_aborting",
    )

    def __init__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                 send: Callable[[Message], Awaitable[None]], close_timeout: float) -> None:
        self.scope = scope
        self.path: str = scope.get("path", "")
        client = scope.get("client")
        self.client = None if client is None else tuple(client)
        self.state = "connecting"
        self.link: Optional["Link"] = None
        self._receive = receive
        self._send = send
        self._task: Optional["asyncio.Task[Any]"] = asyncio.current_task()  # the one running the app
        self._receiver: Optional["asyncio.Task[Any]"] = None  # the task waiting in receive(), if any
        self._interrupting = False  # that task was cancelled to give it websocket.disconnect
        self._close_code: Optional[int] = None  # the app is told this code once the close is decided
        self._closer: Optional["asyncio.Task[None]"] = None
        self._close_timeout = close_timeout
        self._aborting = False

    # -- the registry's view -------------------------------------------------------
    @property
    def id(self) -> int:
        assert self.link is not None
        return self.link.id

    @property
    def opened_at(self) -> float:
        assert self.link is not None
        return self.link.connection.opened_at

    @property
    def last_activity(self) -> Optional[float]:
        return None if self.link is None else self.link.connection.last_activity

    def __repr__(self) -> str:
        conn_id = None if self.link is None else self.link.id
        return f"<WebSocket id={conn_id} path={self.path!r} client={self.client!r} state={self.state}>"

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: Optional[str] = None) -> "asyncio.Task[Any]":
        """Run ``coro`` as a task cancelled when this WebSocket ends (the manager's ``spawn``)."""
        assert self.link is not None
        return self.link.manager.spawn(self.link.id, coro, name=name)

    def add_cleanup(self, callback: Callable[[CloseReason], Any]) -> None:
        """Call ``callback(reason)`` exactly once when this WebSocket ends (the manager's ``add_cleanup``)."""
        assert self.link is not None
        self.link.manager.add_cleanup(self.link.id, callback)

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self.send({"type": "websocket.send", "bytes": data})

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from outside the app: send the close frame, give the app ``websocket.disconnect``.

        Returns at once; the app has the close timeout to return, then it is cancelled.
        """
        if self.state == "closing" or self.state == "closed":
            return
        self._begin_close(code, reason)
        if self.link is not None:
            self.link.closing(CloseReason.CLOSED)

    # -- what the app calls ----------------------------------------------------------
    async def receive(self) -> Message:
        """The app's ``receive``: the server's next message, or ``websocket.disconnect`` once closed."""
        if self._close_code is not None:
            return {"type": "websocket.disconnect", "code": self._close_code}
        task = asyncio.current_task()
        self._receiver = task
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self._interrupting and task is not None and task.uncancel() == 0:
                self._interrupting = False  # our cancellation, taken back: the app gets the disconnect
                return {"type": "websocket.disconnect", "code": self._close_code}
            raise
        finally:
            self._receiver = None
        if self.link is not None:
            self.link.activity()
        if message.get("type") == "websocket.disconnect":
            self._close_code = message.get("code", 1005)
            if self.state != "closing":  # the client (or the server) closed first
                self.link.closing(CloseReason.PEER)  # type: ignore[union-attr]
            self.state = "closed"
        return message

    async def send(self, message: Message) -> None:
        """The app's ``send``: to the server, unless the WebSocket is closing (then WebSocketClosed)."""
        kind = message.get("type")
        if self.state == "closing" or self.state == "closed":
            if kind == "websocket.close":
                return  # closed already: a second close is a no-op
            raise WebSocketClosed(f"{kind!r} on a {self.state} WebSocket")
        if kind == "websocket.accept":
            await self._send(message)
            self.state = "open"
            if self.link is not None:
                self.link.opened()
            return
        if kind == "websocket.close":
            self.state = "closing"
            if self.link is not None:
                self.link.closing(CloseReason.CLOSED)
        await self._send(message)
        if self.link is not None:
            self.link.activity()

    # -- closing -------------------------------------------------------------------------
    def close_requested(self, reason: CloseReason) -> None:
        """The manager's hook (idle, handshake, lifetime, shutdown): close with 1001."""
        if self.state == "closing" or self.state == "closed":
            return
        self._begin_close(GOING_AWAY, _CLOSE_TEXT.get(reason, ""))

    def _begin_close(self, code: int, reason: str) -> None:
        accepted = self.state == "open"
        self.state = "closing"
        self._close_code = code
        message: Message = {"type": "websocket.close", "code": code}
        if accepted and reason:
            message["reason"] = reason
        self._closer = asyncio.ensure_future(self._send_close(message))
        receiver = self._receiver
        if receiver is not None and not self._interrupting:
            self._interrupting = True
            receiver.cancel()

    async def _send_close(self, message: Message) -> None:
        try:
            await self._send(message)
        except Exception:  # the client is gone already: nothing to tell it
            pass
        if self.link is not None:
            self.link.activity()

    def abort(self) -> None:
        """Cancel the app (the close timeout passed); the middleware takes the cancellation back."""
        if not self._aborting and self._task is not None and not self._task.done():
            self._aborting = True
            self._task.cancel()

    def aborted(self, task: "asyncio.Task[Any]") -> bool:
        """Whether the CancelledError the app ended with was ours alone (then it is taken back)."""
        if not self._aborting:
            return False
        self._aborting = False
        return task.uncancel() == 0

    async def finish(self) -> None:
        """The app returned: let a close frame in flight go out (up to the close timeout)."""
        self._receiver = self._task = None
        closer = self._closer
        if closer is not None and not closer.done():
            try:
                await asyncio.wait((closer,), timeout=self._close_timeout)
            finally:
                if not closer.done():
                    closer.cancel()
