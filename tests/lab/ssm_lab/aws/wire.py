"""The lab's data channel: Session Manager's WebSocket protocol on the session's StreamUrl, as the service speaks it.

A client (AWS's session-manager-plugin, the lab's stand-in, any other implementation) opens a WebSocket to
``ws://HOST:PORT/v1/data-channel/<session-id>?...`` on the lab's message port, sends the token message and then
exchanges AgentMessages (see ../shared/SESSION-PROTOCOL.md and plugins/plugin_utils/_data_channel.py, whose codec
this uses through ``ssm_lab.codec``: the protocol is written once in the collection). This module plays the service
and, through the node's agent stream, the agent's end of the channel:

- the handshake: HandshakeRequest with the node agent's version and the session type and properties, the client's
  HandshakeResponse, HandshakeComplete;
- every input message acknowledged and processed once, in order; every output message kept until acknowledged and
  resent after RESEND_AFTER seconds; a client that acknowledges nothing for the lab's ``ack_timeout`` seconds loses
  the session;
- shell sessions (Standard_Stream, InteractiveCommands, NonInteractiveCommands) relayed to the agent's pty, Size
  messages applied to it; port sessions multiplexed (smux v1, agents newer than 3.0.196.0) with one agent stream per
  smux stream, or basic (one connection, reopened after the DisconnectToPort flag); AWS-StartSSHSession relayed to
  the node's ``sshd -i``;
- ``channel_closed`` once every output message is acknowledged, when the session ends or is terminated;
- a WebSocket that drops keeps the session for the lab's ``resume_window`` seconds: ResumeSession and a new token message take
  it up again with both sequence counters and the unacknowledged output; the ``drop_channel_every`` fault breaks
  each session's WebSocket (no close frame) once it has been open that many seconds, as the service does about
  hourly;
- bad input on the wire (a wrong token, a frame that does not decode or whose digest is wrong, a message type a
  client never sends) ends that session with the reason logged and in the session's details.

The WebSocket itself is websockets' sans-I/O server protocol over the message server's asyncio streams, so that one
port serves agents, the nodes' egress and the data channel.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import urllib.parse

from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..codec import dc
from . import authz

log = logging.getLogger("ssm_lab.wire")

RESEND_AFTER = 0.3  # seconds an output message waits for its acknowledgement before it is sent again
RESEND_TICK = 0.1
TOKEN_WAIT = 10.0  # seconds for the token message after the upgrade
CLOSE_WAIT = 5.0  # seconds the end of a session waits for the acknowledgement of its last output
CHUNK = 32768  # the largest Output payload the lab sends (the plugin has no read limit)
WINDOW = 512  # unacknowledged output messages before the relay stops reading from the agent
LINGER = 5.0  # seconds a closed WebSocket keeps reading for the client's close frame (the closing handshake)
DROP_TICK = 0.1  # how often the drop_channel_every fault looks at a session's WebSocket
MUX_AFTER = "3.0.196.0"  # agents newer than this multiplex port sessions (smux)

SHELL_TYPES = {"SSM-SessionManagerRunShell": "Standard_Stream", "AWS-StartInteractiveCommand": "InteractiveCommands",
               "AWS-StartNonInteractiveCommand": "NonInteractiveCommands"}


class WireError(Exception):
    """Why a session ends because of what its client sent."""


class Connection:
    """One WebSocket on an accepted asyncio stream (websockets' sans-I/O protocol)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = ServerProtocol(max_size=2**22)
        self._events: list = []
        self._fragments: list = []
        self.closed = False
        self._reading = False  # recv() is waiting on the stream: the closing handshake leaves the reading to it
        self._linger: asyncio.Task | None = None
        self.silent = False  # the stall_channel_after fault: nothing more is written, what arrives is dropped
        self.half_closed = False  # the half_close_channel_after fault: our side of TCP is shut, reading goes on
        self._flush_due = False  # a flush of what send() queued is scheduled on the event loop

    def _flush(self) -> None:
        pending: list = []
        for data in self.protocol.data_to_send():
            if self.writer.is_closing():
                return
            if self.silent or self.half_closed:
                continue
            if data:
                pending.append(data)
            else:  # the protocol's end of the data stream: the closing handshake is done, close TCP
                self.writer.write(b"".join(pending))
                self.closed = True
                self.writer.close()
                return
        if pending:
            self.writer.write(b"".join(pending))  # one write (one system call) for all the frames due

    def _flush_soon(self) -> None:
        """Flush once the event loop has handled what else is due: the frames sent meanwhile (the
        acknowledgements of a burst of input) go out in one write, as a service's buffered socket sends them."""
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop's thread
            self._flush()
            return
        self._flush_due = True

        def flush() -> None:
            self._flush_due = False
            self._flush()
        loop.call_soon(flush)

    async def accept(self, first: bytes) -> Request | None:
        """Read the upgrade request (``first`` is its first line, already read) and answer it."""
        self.protocol.receive_data(first)
        while True:
            events = self.protocol.events_received()
            if events:
                break
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                return None
            self.protocol.receive_data(data)
        request, self._events = events[0], events[1:]
        if not isinstance(request, Request):
            return None
        response = self.protocol.accept(request)
        self.protocol.send_response(response)
        self._flush()
        return request if response.status_code == 101 else None

    async def recv(self) -> tuple[str, bytes] | None:
        """The next data message as ("text" | "binary", bytes); None once the connection is over."""
        while True:
            while self._events:
                frame = self._events.pop(0)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self._fragments = [frame.opcode, frame.data]
                elif frame.opcode == Opcode.CONT and self._fragments:
                    self._fragments.append(frame.data)
                else:
                    continue  # ping (answered by the protocol), pong, close
                if frame.fin:
                    opcode, *parts = self._fragments
                    self._fragments = []
                    return ("text" if opcode == Opcode.TEXT else "binary"), b"".join(parts)
            if self.closed:
                return None
            self._reading = True
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            finally:
                self._reading = False
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
                self.closed = True
            self._events.extend(self.protocol.events_received())
            self._flush()

    def send(self, frame: bytes) -> None:
        """Send one binary frame; nothing once the connection is closing (the client's close, or ours)."""
        if self.closed or self.writer.is_closing() or self.protocol.state is not State.OPEN:
            return
        self.protocol.send_binary(frame)
        self._flush_soon()

    def half_close(self) -> None:
        """Shut our side of TCP (FIN, no close frame) and go on reading, as a half-closed connection does."""
        self.half_closed = True
        if not self.writer.is_closing() and self.writer.can_write_eof():
            self.writer.write_eof()

    def abort(self) -> None:
        """Break the TCP connection without a close frame, as a network drop does."""
        self.closed = True
        if not self.writer.is_closing():
            self.writer.transport.abort()

    def close(self) -> None:
        """Start the closing handshake: a close frame, then TCP is closed once the client answers it (or after LINGER
        seconds). Closing TCP at once would be a bug with real consequences: a client's message that arrives after
        the close (an acknowledgement, typed input) makes the kernel answer with a reset, and a reset discards what
        the client had not read yet, channel_closed and its reason included."""
        if self.closed or self.writer.is_closing():
            self.closed = True
            return
        self.closed = True
        if self.protocol.state is State.OPEN:
            self.protocol.send_close()
            self._flush()
        if not self.writer.is_closing():
            self._linger = asyncio.ensure_future(self._read_until_closed())

    async def _read_until_closed(self) -> None:
        """Read (and drop) what the client still sends until its close frame or EOF, then close TCP."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER
        try:
            while not self.writer.is_closing() and loop.time() < deadline:
                if self._reading:  # recv() reads the answer itself
                    await asyncio.sleep(0.05)
                    continue
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
                except (asyncio.TimeoutError, ConnectionError, OSError):
                    break
                if not data:
                    break
                self.protocol.receive_data(data)
                self.protocol.events_received()
                self._flush()
        finally:
            if not self.writer.is_closing():
                self.writer.close()


def handshake_properties(session) -> tuple[str, dict]:
    """The SessionType and Properties of the session's HandshakeRequest (what its document's properties block
    holds with the parameters substituted, values as strings)."""
    if session.session_type != "Port":
        return SHELL_TYPES.get(session.document, session.session_type), {}
    properties = {name: str(values[0]) for name, values in (session.parameters or {}).items()
                  if isinstance(values, list) and values}
    if session.document != "AWS-StartSSHSession":
        properties["type"] = "LocalPortForwarding"
    return "Port", properties


class WireSession:
    """The service's state of one session's data channel; it outlives a dropped WebSocket (ResumeSession)."""

    def __init__(self, server, session, node) -> None:
        self.server = server  # the MessageServer: agent streams, session ends
        self.session = session
        self.node = node
        self.faults = server.registry.faults
        self.agent_version = (self.faults.handshake_agent_version or getattr(node, "agent_version", "")
                              or dc.AGENT_VERSION)
        self.session_type, self.properties = handshake_properties(session)
        if self.session_type != "Port":
            self.mode = "shell"
        elif "type" not in self.properties:
            self.mode = "ssh"
        elif dc.version_newer(self.agent_version, MUX_AFTER):
            self.mode = "mux"
        else:
            self.mode = "basic"
        self.out = dc.Resender(dc.OUTPUT, timeout=RESEND_AFTER)
        self.inbound = dc.InOrder()
        self.conn: Connection | None = None
        self.handshake_done = False
        self.ended = False
        self.ending = False
        self.acked = asyncio.Event()
        self.last_ack = time.monotonic()
        self.streams: dict[int, dict] = {}  # stream id -> {"writer": the agent's end once open, "pending": data}
        self.smux = dc.SmuxReader()
        self.basic_stream = 0
        self.dropped_at: float | None = None
        self.attached_at = time.monotonic()
        self.drops = 0  # WebSockets broken by the drop_channel_every fault
        self.delay = max(self.faults.stream_rtt / 2, 0.0)
        self.counts = server.registry.count_stream
        self.answered = True  # output went out since the client's last data: its next data is a new round trip
        self.counts("sessions")
        self.tasks: set = set()
        self.resender = self._spawn(self._resend())
        self.dropper = self._spawn(self._drop_channel())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- the WebSocket -------------------------------------------------------------------------------------
    async def attach(self, conn: Connection) -> None:
        """Serve one WebSocket of this session until it closes."""
        if self.conn is not None:
            self.conn.close()
        self.conn, self.dropped_at, self.attached_at = conn, None, time.monotonic()
        if self.out.next_sequence == 0:
            _message, frame = self.out.message(dc.handshake_request(self.session_type, self.properties,
                                                                     agent_version=self.agent_version),
                                               dc.HANDSHAKE_REQUEST)
            conn.send(frame)
        else:
            self.last_ack = time.monotonic()  # a client cannot acknowledge while it has no WebSocket
            for frame in self.out.all_frames():  # a resumed session: what the client has not acknowledged
                conn.send(frame)
        loop = asyncio.get_running_loop()
        delayed: asyncio.Queue | None = asyncio.Queue() if self.delay else None
        later = self._spawn(self._receive_later(delayed)) if delayed is not None else None
        try:
            while not self.ended:
                received = await conn.recv()
                if received is None:
                    break
                kind, frame = received
                if conn.silent:
                    continue  # the stall_channel_after fault: read, never processed nor acknowledged
                if kind != "binary":
                    raise WireError("a text frame after the token message")
                if delayed is not None:  # the one-way latency shifts each message, it does not throttle them
                    delayed.put_nowait((loop.time() + self.delay, frame))
                else:
                    await self._receive(frame)
        except WireError as error:
            await self.end("Failed", f"the client broke the protocol: {error}", reason_to_client=str(error))
        finally:
            if later is not None:
                delayed.put_nowait((0.0, None))
            if self.conn is conn:
                self.conn = None
                if not self.ended:
                    self.dropped_at = time.monotonic()
                    self._spawn(self._await_resume())
            conn.close()

    async def _receive_later(self, delayed: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, frame = await delayed.get()
            if frame is None or self.ended:
                return
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            try:
                await self._receive(frame)
            except WireError as error:
                await self.end("Failed", f"the client broke the protocol: {error}", reason_to_client=str(error))
                return

    async def _await_resume(self) -> None:
        dropped = self.dropped_at
        await asyncio.sleep(self.faults.resume_window)
        if not self.ended and self.conn is None and self.dropped_at == dropped:
            await self.end("Terminated", "the client went away and did not resume the session")

    async def _drop_channel(self) -> None:
        """The drop_channel_every fault (read on every tick, so it can be set on a running lab): break the WebSocket
        once it has been open that long. The session then waits for ResumeSession as after any other drop."""
        while not self.ended:
            faults = self.faults
            on = faults.drop_channel_every > 0 or faults.stall_channel_after > 0 or faults.half_close_channel_after > 0
            await asyncio.sleep(DROP_TICK if on else 1.0)  # off: a cheap look a second
            every, conn = self.faults.drop_channel_every, self.conn
            if conn is None or self.ending:
                continue
            opened = time.monotonic() - self.attached_at
            if every > 0 and opened >= every:
                self.drops += 1
                log.info("session %s: data channel dropped (drop_channel_every %g s, drop %d)", self.session.id,
                         every, self.drops)
                conn.abort()
                continue
            stall, half = self.faults.stall_channel_after, self.faults.half_close_channel_after
            if stall > 0 and opened >= stall and not conn.silent:
                log.info("session %s: data channel stalled (stall_channel_after %g s)", self.session.id, stall)
                conn.silent = True
            if half > 0 and opened >= half and not conn.half_closed:
                log.info("session %s: data channel half-closed (half_close_channel_after %g s)", self.session.id, half)
                conn.half_close()

    def _send(self, payload: bytes, payload_type: int = dc.OUTPUT_DATA) -> None:
        _message, frame = self.out.message(payload, payload_type)
        if payload_type == dc.OUTPUT_DATA:
            self.counts("output_messages")
            self.answered = True
        if self.conn is not None:
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._send_late, frame)
            else:
                self.conn.send(frame)

    def _send_late(self, frame: bytes) -> None:
        if self.conn is not None:
            self.conn.send(frame)

    async def output(self, data: bytes) -> None:
        """Send ``data`` to the client as Output messages, waiting while too much of it is unacknowledged."""
        for start in range(0, len(data), CHUNK):
            while self.out.pending >= WINDOW and not self.ended:
                self.acked.clear()
                try:
                    await asyncio.wait_for(self.acked.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
            if self.ended:
                return
            self._send(data[start:start + CHUNK])
            self.session.last_activity = time.time()

    async def _resend(self) -> None:
        while not self.ended:
            await asyncio.sleep(RESEND_TICK)
            if self.conn is None:
                continue
            for frame in self.out.due():
                self.conn.send(frame)
            limit = self.faults.ack_timeout
            if self.out.pending and time.monotonic() - self.last_ack > limit:
                await self.end("Failed", f"the client acknowledged nothing for {limit:g} s",
                               reason_to_client="no acknowledgement")
                return

    # --- what the client sends ---------------------------------------------------------------------------------
    async def _receive(self, frame: bytes) -> None:
        try:
            message = dc.decode(frame)
        except dc.DataChannelError as error:
            raise WireError(str(error)) from None
        if message.message_type == dc.ACK:
            try:
                number = dc.acknowledged_sequence(message)
            except dc.DataChannelError as error:
                raise WireError(str(error)) from None
            if self.out.acknowledged(number):
                self.last_ack = time.monotonic()
                self.acked.set()
            return
        if message.message_type != dc.INPUT:
            raise WireError(f"a message of type {message.message_type!r}, which a client does not send")
        if self.out.pending == 0:
            self.last_ack = time.monotonic()
        acknowledge, ready = self.inbound.receive(message)
        if acknowledge and self.conn is not None:
            self.conn.send(dc.acknowledge(message).encode())
        for each in ready:
            await self._process(each)

    async def _process(self, message) -> None:
        self.session.last_activity = time.time()
        kind = message.payload_type
        if kind == dc.HANDSHAKE_RESPONSE:
            await self._handshake_response(message)
        elif not self.handshake_done:
            raise WireError(f"payload type {kind} before the handshake was complete")
        elif kind == dc.OUTPUT_DATA:
            self.counts("input_messages")
            if self.answered:
                self.counts("round_trips")
                self.answered = False
            await self._data(message.payload)
        elif kind == dc.SIZE:
            self._resize(message)
        elif kind == dc.FLAG:
            try:
                value = message.flag()
            except dc.DataChannelError as error:
                raise WireError(str(error)) from None
            await self._flag(value)
        else:
            log.info("session %s: payload type %s ignored", self.session.id, kind)

    async def _handshake_response(self, message) -> None:
        if self.handshake_done:
            return
        try:
            answer = message.json()
        except dc.DataChannelError:
            raise WireError("the HandshakeResponse is not JSON") from None
        actions = (answer.get("ProcessedClientActions") or []) if isinstance(answer, dict) else []
        failed = [a for a in actions if not isinstance(a, dict) or a.get("ActionStatus") != 1]
        if not actions or failed:
            reason = "; ".join(str(a.get("Error") or a) if isinstance(a, dict) else str(a) for a in failed)
            raise WireError(f"the client did not accept the session: {reason or 'no action processed'}")
        self.handshake_done = True
        self._send(dc.handshake_complete(), dc.HANDSHAKE_COMPLETE)
        self.session.status = "Connected"
        if self.mode in ("shell", "ssh"):
            self._open_stream(0)

    def _resize(self, message) -> None:
        try:
            size = message.json()
            cols, rows = int(size["cols"]), int(size["rows"])
        except (dc.DataChannelError, KeyError, TypeError, ValueError):
            raise WireError("a Size message that is not {\"cols\": C, \"rows\": R}") from None
        if self.mode == "shell" and cols > 0 and rows > 0 and self.node is not None and self.node.agent is not None:
            self.node.agent.send({"t": "resize", "session": self.session.id, "cols": cols, "rows": rows})

    async def _flag(self, value: int) -> None:
        if value == dc.TERMINATE_SESSION:
            await self.end("Terminated", "", send_close=False)
        elif value == dc.DISCONNECT_TO_PORT and self.mode == "basic":
            self._close_stream(self.basic_stream)

    async def _data(self, payload: bytes) -> None:
        if self.mode == "mux":
            try:
                frames = self.smux.feed(payload)
            except dc.DataChannelError as error:
                raise WireError(str(error)) from None
            for command, stream_id, data in frames:
                if command == dc.SYN:
                    if stream_id not in self.streams:
                        self._open_stream(stream_id)
                elif command == dc.PSH:
                    self._write_stream(stream_id, data)
                elif command == dc.FIN:
                    self._write_stream(stream_id, None)
            return
        if self.mode == "basic" and self.basic_stream not in self.streams:
            self.basic_stream += 1
            self._open_stream(self.basic_stream)
        self._write_stream(0 if self.mode in ("shell", "ssh") else self.basic_stream, payload)

    # --- agent streams -------------------------------------------------------------------------------------------
    def _write_stream(self, stream_id: int, data: bytes | None) -> None:
        """Bytes (None: the client's end of the stream) for an agent stream, kept until it is open."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream["writer"] is None:
            stream["pending"].append(data)
            return
        if data is None:
            self._flush_stream(stream)
            if stream["writer"].can_write_eof():
                stream["writer"].write_eof()
            return
        buffered = stream.setdefault("buffer", bytearray())
        if not buffered:  # the first since the last flush: the rest of this burst of input joins it, one write
            try:
                asyncio.get_running_loop().call_soon(self._flush_stream, stream)
            except RuntimeError:  # not on the event loop's thread
                stream["writer"].write(data)
                return
        buffered += data

    @staticmethod
    def _flush_stream(stream: dict) -> None:
        buffered = stream.get("buffer")
        if buffered:
            data = bytes(buffered)
            buffered.clear()
            if not stream["writer"].is_closing():
                stream["writer"].write(data)

    def _close_stream(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream["writer"] is not None and not stream["writer"].is_closing():
            self._flush_stream(stream)
            stream["writer"].close()

    def _open_stream(self, stream_id: int) -> None:
        """A new stream: what the client sends for it is kept until the agent's end is open."""
        stream = {"writer": None, "pending": []}
        self.streams[stream_id] = stream
        self._spawn(self._relay_stream(stream_id, stream))

    async def _relay_stream(self, stream_id: int, stream: dict) -> None:
        """Open the agent's end of one stream and relay what it says to the client until it ends."""
        opened = await self.server.open_agent_stream(self.session, self.node, stream_id)
        if isinstance(opened, str):
            self.streams.pop(stream_id, None)
            if self.mode == "mux":
                self._send(struct.pack(">I", dc.CONNECT_TO_PORT_ERROR), dc.FLAG)
                self._send(dc.smux_frame(dc.FIN, stream_id))
            elif self.mode in ("shell", "ssh"):
                await self.end("Failed", opened, reason_to_client=opened)
            return
        _hello, reader, writer, done = opened
        stream["writer"] = writer
        for data in stream["pending"]:
            self._write_stream(stream_id, data)
        record = self.session.session_type == "Standard_Stream"
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if record:
                    self.session.transcript.extend(data)
                if self.mode == "mux":
                    await self.output(dc.smux_frame(dc.PSH, stream_id, data))
                else:
                    await self.output(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if not done.done():
                done.set_result(True)
            if self.streams.get(stream_id) is stream:
                self._close_stream(stream_id)
        if self.ended:
            return
        if self.mode == "mux":
            self._send(dc.smux_frame(dc.FIN, stream_id))
        elif self.mode in ("shell", "ssh"):
            node = self.node
            if node is not None and (node.agent is None or node.agent.dropping):
                # The agent went away: on AWS the client's WebSocket stays open and silent until it is back.
                while not self.ended and (node.agent is None or node.agent.dropping):
                    await asyncio.sleep(0.5)
            await self.end("Terminated", "")

    # --- the end ---------------------------------------------------------------------------------------------
    async def end(self, status: str, details: str, reason_to_client: str = "", send_close: bool = True) -> None:
        """End the session: wait (a while) for the acknowledgement of every output message, send channel_closed,
        close the WebSocket and every agent stream."""
        if self.ending:
            return
        self.ending = True
        if send_close and self.conn is not None and status != "Failed":
            deadline = time.monotonic() + CLOSE_WAIT
            while self.out.pending and self.conn is not None and time.monotonic() < deadline:
                self.acked.clear()
                try:
                    await asyncio.wait_for(self.acked.wait(), 0.2)
                except asyncio.TimeoutError:
                    pass
        self.ended = True
        if details:
            log.warning("session %s ends (%s): %s", self.session.id, status, details)
        if send_close and self.conn is not None:
            self.conn.send(dc.channel_closed(self.session.id, self.session.target, reason_to_client).encode())
        if self.conn is not None:
            self.conn.close()
        for stream_id in list(self.streams):
            self._close_stream(stream_id)
        self.server.wire_session_ended(self, status, details)

    def cancel(self) -> None:
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()


async def serve(server, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One WebSocket on the message port: upgrade, token, then the session's data channel."""
    conn = Connection(reader, writer)
    try:
        request = await conn.accept(first)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        request = None
    if request is None:
        conn.close()
        return
    path = urllib.parse.urlsplit(request.path).path
    prefix = "/v1/data-channel/"
    session_id = path[len(prefix):] if path.startswith(prefix) else ""
    session = server.registry.sessions.get(session_id)
    try:
        received = await asyncio.wait_for(conn.recv(), TOKEN_WAIT)
    except asyncio.TimeoutError:
        received = None
    problem = ""
    if received is None:
        problem = "no token message"
    elif received[0] != "text":
        problem = "the first frame is not the token message"
    else:
        try:
            token = dc.read_token_message(received[1])["TokenValue"]
        except (ValueError, KeyError) as error:
            token, problem = "", f"the token message does not read: {error}"
        if not problem and (session is None or token != session.token):
            problem = "InvalidToken: the session token is not valid"
        elif not problem and not session.active():
            problem = f"InvalidToken: session {session.id} is {session.status}"
        if not problem:
            problem = data_channel_denial(server.registry, session)
    if problem:
        log.warning("data channel for %r refused: %s", session_id, problem)
        if received is not None:
            conn.send(dc.channel_closed(session_id, getattr(session, "target", ""), problem).encode())
        conn.close()
        if session is not None and session.active() and session.id not in server.wire_sessions:
            session.details = problem
        return
    await server.attach_wire(session, conn)


def data_channel_denial(registry, session) -> str:
    """ssmmessages:OpenDataChannel on the session, judged for whoever was handed its token (``authz``): "" when
    allowed (the lab's default credentials always are), else AWS's AccessDeniedException message."""
    region = session.token_region or registry.region
    who = authz.caller(registry.account_id, region, session.token_key)
    if who is None:
        return ""
    resource = authz.session_arn(authz.partition_of(region), region, registry.account_id, session.id)
    try:
        authz.require(who, "ssmmessages:OpenDataChannel",
                      [(resource, authz.session_context(session.owner_id, session.target))])
    except authz.Denied as denied:
        return f"AccessDeniedException: {denied.message()}"
    return ""


def looks_like_websocket(first: bytes) -> bool:
    return first.startswith(b"GET /v1/data-channel/")


