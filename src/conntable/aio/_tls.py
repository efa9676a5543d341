"""TLS under the manager's control: accept plain TCP, register, then upgrade.

asyncio and uvloop call ``connection_made`` only once a TLS server's
handshake is complete, and ``connection_made`` is where a manager learns of
a connection. A server that lets the loop do its TLS therefore has
connections that nobody counts: the breaker does not see them,
``handshake_timeout`` does not bound them, and a few hundred clients that
open a TCP connection and say nothing exhaust the descriptors (EMFILE).

So when the manager is given the ``ssl`` context instead of the loop, the
loop serves plain TCP; the manager's adapter registers each connection at
accept (a record in state NEW, due by ``handshake_timeout`` or, without one,
by the handshake timeout here, asyncio's default 60 s), and upgrades it with
``loop.start_tls(transport, adapter, context, server_side=True)``. Once the
handshake is done, the user's protocol gets ``connection_made`` with the TLS
transport, as it would from the loop. A handshake that fails or is too slow
ends the record: reason ``handshake`` when a deadline ran out (the manager's;
asyncio's own is set later than it, as a backstop), ``peer`` when the client
closed its end, ``error`` for anything else (a TLS alert, a reset). Under
the breaker, a refused connection gets a handshake only if its protocol
answers refusals (overrides ``connection_rejected``), within the refusal's
``close_timeout``; otherwise it is closed at once, before any TLS work.

The upgrade's first step runs inside ``connection_made`` (:func:`start_now`):
uvloop starts reading right after ``connection_made`` returns and may hand
the client's first bytes to the protocol before any callback scheduled in it
runs, so ``start_tls`` must have put its TLS protocol on the transport by
then. Bytes that arrive before the TLS protocol's own ``connection_made``
wait in its input buffer, on both loops.
"""

from __future__ import annotations

import asyncio
import ssl
import types
from typing import Any, Coroutine, Generator, Optional, TypeVar

from ._arguments import optional_seconds
from ._connection import CloseReason

__all__ = ("TLSUpgrade", "start_now", "handshake_failure", "serves_tls_itself", "DEFAULT_HANDSHAKE_TIMEOUT")

T = TypeVar("T")

#: asyncio's and uvloop's default ``ssl_handshake_timeout``.
DEFAULT_HANDSHAKE_TIMEOUT = 60.0


class TLSUpgrade:
    """What upgrading one server's connections takes: the context and two timeouts (checked once)."""

    __slots__ = ("context", "handshake_timeout", "shutdown_timeout")

    def __init__(self, context: Any, handshake_timeout: Optional[float], shutdown_timeout: Optional[float]) -> None:
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext for a server, not {type(context).__name__}")
        timeout = optional_seconds("ssl_handshake_timeout", handshake_timeout)
        if timeout is None and handshake_timeout is not None:  # math.inf: a silent client held for ever
            raise ValueError("ssl_handshake_timeout must be finite")
        self.context = context
        #: Seconds from accept until the handshake must be done (unless ``handshake_timeout`` is shorter).
        self.handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT if timeout is None else timeout
        #: Passed to ``start_tls`` (None: the loop's default).
        self.shutdown_timeout = optional_seconds("ssl_shutdown_timeout", shutdown_timeout)


def serves_tls_itself(server: Any) -> bool:
    """Whether ``server`` (asyncio's; uvloop's does not tell) runs TLS handshakes before ``connection_made``."""
    return isinstance(getattr(server, "_ssl_context", None), ssl.SSLContext)


def handshake_failure(exc: Optional[BaseException]) -> CloseReason:
    """The close reason of a handshake that ended with ``exc`` (None: the transport was closed).

    Only used when nothing decided a reason before (the manager's deadline,
    a shutdown or a refusal do, and the first reason wins).
    """
    if exc is None:
        return CloseReason.CLOSED
    if isinstance(exc, ConnectionResetError) and exc.errno is None:  # the client's EOF mid-handshake
        return CloseReason.PEER
    if isinstance(exc, ConnectionAbortedError):  # the loop's own handshake timeout (the backstop)
        return CloseReason.HANDSHAKE
    return CloseReason.ERROR


@types.coroutine
def _go_on(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Drive ``coro`` on from where its first step left it: it yielded ``yielded`` to whoever stepped it.

    The task that runs this receives ``yielded`` (the future ``coro`` waits
    for) as if ``coro`` had yielded it to the task itself, and passes
    everything on: values sent, exceptions thrown in (cancellation).
    """
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


async def _rest(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await _go_on(coro, yielded)


async def _finished(value: T) -> T:
    return value


def start_now(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str) -> "asyncio.Task[T]":
    """A task running ``coro`` whose first step has already run, here and now.

    What Python 3.12's ``eager_start`` does, on any supported Python and any
    loop. What the first step raises is raised here (the coroutine is closed).
    """
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        return loop.create_task(_finished(done.value), name=name)
    try:
        return loop.create_task(_rest(coro, yielded), name=name)
    except BaseException:  # a closed loop: let the coroutine clean up after itself
        coro.close()
        raise
