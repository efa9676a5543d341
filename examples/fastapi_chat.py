"""FastAPI's WebSocket chat, with conntable keeping the connections instead of a ``list``.

    python -m pip install ".[asgi]" fastapi && python examples/fastapi_chat.py --port 8000
    # then open http://127.0.0.1:8000 in two browser tabs, or:
    python -m websockets ws://127.0.0.1:8000/ws/1      # and /ws/2 in another terminal

FastAPI's documentation ("WebSockets", "Handling disconnections and multiple
clients") keeps a ``ConnectionManager`` with a ``list`` of WebSockets and
broadcasts with a ``for`` loop over it: a dead or slow client stalls every
broadcast, a client that says nothing stays for ever, there is no limit, and
on shutdown uvicorn closes everyone with 1012 (or waits for ever for an app
that does not return). Here the same app is wrapped in
:class:`conntable.asgi.ConnectionMiddleware`:

* the registry is ``chat.websockets`` (connection id -> record), kept by the
  middleware whatever ends a connection: no ``connect``/``disconnect``
  bookkeeping, nothing to leak when the app forgets to remove one;
* ``chat.broadcast(text)`` sends to every open WebSocket at once; one that
  fails or takes longer than a second is closed (1008) and left out, the
  others are not held up;
* ``--idle-timeout``: a client that neither sends nor receives anything for
  this long is closed with 1001 (``"idle timeout"``) and the endpoint gets
  ``WebSocketDisconnect``, as for any other close;
* ``--max-websockets``: the WebSocket over the limit is refused at the
  handshake with HTTP 503 and ``Retry-After``; the endpoint never runs;
* SIGINT or SIGTERM: every WebSocket is closed with 1001 (``"server
  shutdown"``) *before* uvicorn starts its own shutdown, bounded by
  ``--shutdown-grace`` (then the endpoints still running are cancelled);
  then uvicorn stops, and the accounting is printed.

Each connection's cleanup logs why it ended (``peer``, ``idle``,
``shutdown``, ...) on stderr. Needs FastAPI and uvicorn (the ``asgi`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any, Optional

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from conntable.asgi import ASGIShutdownSummary, ConnectionMiddleware, websocket_of

log = logging.getLogger("chat")

PAGE = """<!DOCTYPE html>
<html><head><title>Chat</title></head>
<body>
<h1>WebSocket Chat</h1>
<h2>Your ID: <span id="ws-id"></span></h2>
<form onsubmit="sendMessage(event)"><input type="text" id="messageText" autocomplete="off"/><button>Send</button></form>
<ul id="messages"></ul>
<script>
var client_id = Date.now() % 100000;
document.querySelector("#ws-id").textContent = client_id;
var ws = new WebSocket(`ws://${location.host}/ws/${client_id}`);
function show(text) {
    var item = document.createElement("li");
    item.appendChild(document.createTextNode(text));
    document.getElementById("messages").appendChild(item);
}
ws.onmessage = function(event) { show(event.data); };
ws.onclose = function(event) { show(`closed: ${event.code} ${event.reason}`); };
function sendMessage(event) {
    var input = document.getElementById("messageText");
    ws.send(input.value);
    input.value = "";
    event.preventDefault();
}
</script>
</body></html>
"""


def create_app(*, idle_timeout: Optional[float] = 300.0, max_websockets: Optional[int] = None,
               shutdown_grace: float = 10.0) -> ConnectionMiddleware:
    """The docs' chat app, wrapped: serve what this returns (``chat.app`` is the FastAPI app)."""
    app = FastAPI()

    @app.get("/")
    async def get() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.websocket("/ws/{client_id}")
    async def websocket_endpoint(websocket: WebSocket, client_id: int) -> None:
        # The middleware registered the connection before this ran; its cleanup runs exactly once,
        # whatever ends it (the docs' manager.disconnect, which an exception would skip).
        websocket_of(websocket.scope).add_cleanup(
            lambda reason: log.info("client #%d left: %s", client_id, reason.value))
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_text()
                await websocket.send_text(f"You wrote: {data}")
                await chat.broadcast(f"Client #{client_id} says: {data}", timeout=1.0)
        except WebSocketDisconnect:
            await chat.broadcast(f"Client #{client_id} left the chat", timeout=1.0)

    chat = ConnectionMiddleware(app, idle_timeout=idle_timeout, max_websockets=max_websockets,
                                shutdown_grace=shutdown_grace)
    return chat


class ChatServer(uvicorn.Server):
    """uvicorn's ``Server``, except that the first SIGINT or SIGTERM closes every WebSocket with 1001 first.

    uvicorn's own shutdown closes WebSockets with 1012 and only then tells the
    app (``lifespan.shutdown``); here the middleware's shutdown runs while
    uvicorn still serves, and uvicorn is told to stop once it is done. A
    second signal is uvicorn's (Ctrl-C twice: force quit).
    """

    def __init__(self, config: uvicorn.Config, chat: ConnectionMiddleware) -> None:
        super().__init__(config)
        self.chat = chat
        self.summary: Optional[ASGIShutdownSummary] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopping: Optional["asyncio.Task[None]"] = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._loop is None or self._stopping is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._stop)  # a signal handler: hand the work to the loop

    def _stop(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shut_down())

    async def _shut_down(self) -> None:
        try:
            self.summary = await self.chat.shutdown()
        finally:
            self.should_exit = True


async def main(args: argparse.Namespace) -> int:
    chat = create_app(idle_timeout=args.idle_timeout, max_websockets=args.max_websockets,
                      shutdown_grace=args.shutdown_grace)
    config = uvicorn.Config(chat, host=args.host, port=args.port, ws=args.ws, lifespan="on",
                            log_level=args.log_level)
    server = ChatServer(config, chat)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:  # the port is known once uvicorn listens (``--port 0``: any free one)
        if serving.done():
            serving.result()
            return 1  # uvicorn gave up (it logged why)
        await asyncio.sleep(0.05)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    print(f"chat on http://{host}:{port} (WebSockets: ws://{host}:{port}/ws/<client id>)", flush=True)
    await serving
    summary = server.summary or await chat.shutdown()  # (stopped some other way: the lifespan did it)
    ws = summary.websockets
    stats = chat.stats()
    closed = " ".join(f"{reason}={count}" for reason, count in sorted(stats.closed_total.items()) if count)
    print(f"shutdown: {ws.closed_gracefully} closed with 1001, {ws.aborted} cancelled after the grace", flush=True)
    print(f"accounting: opened={stats.opened_total} refused={stats.rejected_total} closed: {closed or '-'}; "
          f"live={len(chat.websockets)} tasks={stats.tasks_active}", flush=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="close a WebSocket with no message either way for this long (1001)")
    parser.add_argument("--max-websockets", type=int, default=None,
                        help="refuse WebSockets beyond this many with HTTP 503 (default: from the fd limit)")
    parser.add_argument("--shutdown-grace", type=float, default=10.0,
                        help="on SIGINT/SIGTERM, cancel the endpoints still running after this long")
    parser.add_argument("--ws", default="auto", help="uvicorn's WebSocket implementation")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    raise SystemExit(asyncio.run(main(arguments)))

