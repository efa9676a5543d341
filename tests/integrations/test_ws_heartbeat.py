"""The heartbeat's ping: a constant frame written straight to the transport, in order with websockets' own writes."""

from __future__ import annotations

import logging
from typing import List

from aio_support import eventually
from websockets.frames import Frame, Opcode
from ws_support import WsScenario

from conntable.websockets._connection import PING_FRAME, PING_PAYLOAD

RESOLUTION = 0.05


class Frames(logging.Handler):
    """What websockets' debug log of one client says it received, frame by frame."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.received: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("< ") and ("PING" in message or "TEXT" in message):
            self.received.append(message.split()[1])


def client_logger(name: str) -> "tuple[logging.Logger, Frames]":
    log = logging.getLogger(f"test.ws.heartbeat.{name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    frames = Frames()
    log.addHandler(frames)
    return log, frames


def test_the_ping_frame_is_the_one_websockets_would_serialize(run):
    """Compression on (permessage-deflate negotiated): extensions leave control frames alone."""

    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION)
        server = await sc.start(ping_interval=None, compression="deflate")
        (client,) = await sc.connect(1, compression="deflate")
        (ws,) = server.connections
        assert ws.protocol.extensions, "permessage-deflate was negotiated"
        assert Frame(Opcode.PING, PING_PAYLOAD).serialize(mask=False, extensions=ws.protocol.extensions) == PING_FRAME
        await sc.finish()

    run(scenario())


def test_pings_reach_the_client_and_its_pongs_keep_it(run):
    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION)
        server = await sc.start(ping_interval=0.2, ping_timeout=0.5)
        log, frames = client_logger("reach")
        (client,) = await sc.connect(1, logger=log)
        await eventually(lambda: frames.received.count("PING") >= 3, "three pings received")
        assert server.heartbeat.pings_sent >= 3 and server.heartbeat.failures == 0
        assert len(sc.mgr) == 1
        await sc.finish()

    run(scenario())


def test_a_ping_after_queued_bytes_goes_out_after_them(run):
    """Something queued in the Sans-I/O protocol and not yet flushed: the ping takes websockets' path, in order."""

    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION)
        server = await sc.start(ping_interval=None)
        log, frames = client_logger("order")
        (client,) = await sc.connect(1, logger=log)
        (ws,) = server.connections
        ws.protocol.send_text(b"queued")  # in protocol.writes, not on the wire yet
        ws.heartbeat_ping()
        ws.heartbeat_ping()  # nothing queued any more: straight to the transport
        await eventually(lambda: len(frames.received) == 3, "the text and the two pings")
        assert frames.received == ["TEXT", "PING", "PING"]
        await sc.finish()

    run(scenario())
