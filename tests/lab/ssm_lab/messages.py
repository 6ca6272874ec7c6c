"""The lab's ssmmessages/ec2messages: the channel agents connect out to, and the session data relay.

Three kinds of connection arrive on the message port, each opening with one JSON line:
- ``{"t": "agent", "node": id}``: an agent's control channel (the real agent's outbound 443 poll). JSON lines
  both ways: heartbeats and command results up, session opens, closes, command runs and drops down.
- ``{"t": "agent-data", "session": id, "stream": n, "ok": bool, "error": str}``: the agent's side of one
  session stream, then raw bytes.
- ``{"t": "client", "session": id, "token": str, "stream": n | "ctl"}``: the session-manager-plugin's side.
  The control plane answers one JSON line (``ok``, the session type, or the error) and then relays bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse
import threading
import time

from . import common
from .registry import Registry, Session

log = logging.getLogger("ssm_lab.messages")

OPEN_TIMEOUT = 15.0


class AgentChannel:
    def __init__(self, node_id: str, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.node_id = node_id
        self.writer = writer
        self.loop = loop
        self.dropping = False

    def send(self, message: dict) -> None:
        """Thread-safe: may be called from the HTTP threads."""

        def _write():
            if not self.writer.is_closing():
                self.writer.write(common.dump_line(message))

        if threading.current_thread() is getattr(self.loop, "_lab_thread", None):
            _write()
        else:
            self.loop.call_soon_threadsafe(_write)


class MessageServer:
    def __init__(self, registry: Registry, host: str, port: int, on_session_end) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.on_session_end = on_session_end  # called in a worker thread with the ended Session
        self.endpoint_address: tuple[str, int] = ("", 0)  # the lab's HTTP endpoint, gated by the S3 path rule
        self.loop = asyncio.new_event_loop()
        self._pending: dict[tuple[str, object], asyncio.Future] = {}
        self._client_writers: dict[str, list[asyncio.StreamWriter]] = {}
        self._command_waiters: dict[tuple[str, str], asyncio.Future] = {}
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lab-messages", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop._lab_thread = threading.current_thread()  # type: ignore[attr-defined]
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port, limit=2**20))
        self.loop.create_task(self._housekeeping())
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    def call(self, coro, timeout: float | None = None):
        """Run a coroutine on the message loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    # --- dispatch ----------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await asyncio.wait_for(reader.readline(), 10)
        except (asyncio.TimeoutError, ConnectionError, ValueError):
            first = b""
        try:
            if not first:
                return
            if not first.startswith(b"{"):
                await self._egress(first, reader, writer)
                return
            try:
                hello = json.loads(first)
            except ValueError:
                return
            kind = hello.get("t")
            if kind == "agent":
                await self._agent_channel(hello, reader, writer)
            elif kind == "agent-data":
                await self._agent_data(hello, reader, writer)
            elif kind == "client":
                await self._client(hello, reader, writer)
        except Exception:  # noqa: BLE001 - one bad connection must not take the server down
            log.exception("connection failed")
        finally:
            if not writer.is_closing():
                writer.close()

    # --- agents ------------------------------------------------------------------------------------------
    async def _agent_channel(self, hello: dict, reader, writer) -> None:
        node = self.registry.nodes.get(hello.get("node", ""))
        if node is None or not node.agent_should_run():
            writer.write(common.dump_line({"ok": False, "error": "unknown or stopped node"}))
            return
        channel = AgentChannel(node.id, writer, self.loop)
        with self.registry.lock:
            old = node.agent
            node.agent = channel
            node.agent_seen = time.time()
            node.agent_version = str(hello.get("version") or node.agent_version)
            node._cache = None
        if old is not None and not old.writer.is_closing():
            old.writer.close()
        writer.write(common.dump_line({"ok": True}))
        log.info("agent %s connected", node.id)
        try:
            while True:
                message = await common.read_line(reader, common.HEARTBEAT_SECONDS * 4)
                if message is None:
                    break
                node.agent_seen = time.time()
                if message.get("t") == "result":
                    waiter = self._command_waiters.pop((message["command"], node.id), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
        finally:
            with self.registry.lock:
                if node.agent is channel:
                    node.agent = None
                    node._cache = None
            log.info("agent %s disconnected", node.id)

    async def _agent_data(self, hello: dict, reader, writer) -> None:
        key = (hello.get("session"), hello.get("stream"))
        future = self._pending.pop(key, None)
        if future is None or future.done():
            return
        done = asyncio.get_running_loop().create_future()
        future.set_result((hello, reader, writer, done))
        await done  # the relay owns the connection until it ends

    # --- clients -----------------------------------------------------------------------------------------
    async def _client(self, hello: dict, reader, writer) -> None:
        session = self.registry.sessions.get(hello.get("session", ""))
        if session is None or hello.get("token") != session.token or not session.active():
            writer.write(common.dump_line({"ok": False, "error": "InvalidToken: the session token is not valid"}))
            return
        node = self.registry.nodes.get(session.target)
        stream = hello.get("stream", 0)
        self._client_writers.setdefault(session.id, []).append(writer)
        try:
            if stream == "ctl":
                # The port-forwarding plugin's own line to the service: the session lives as long as it.
                session.status = "Connected"
                writer.write(common.dump_line({"ok": True, "session_type": session.session_type,
                                               "parameters": session.parameters}))
                await reader.read()  # EOF when the plugin exits
                return
            problem = self._session_start_problem(session, node)
            if problem:
                writer.write(common.dump_line({"ok": False, "error": problem}))
                session.details = problem
                self._end_session(session, "Failed")
                return
            agent_side = await self._open_agent_stream(session, node, stream)
            if isinstance(agent_side, str):
                writer.write(common.dump_line({"ok": False, "error": agent_side}))
                if session.session_type != "Port":
                    session.details = agent_side
                    self._end_session(session, "Failed")
                return
            a_hello, a_reader, a_writer, done = agent_side
            session.status = "Connected"
            writer.write(common.dump_line({"ok": True, "session_type": session.session_type,
                                           "parameters": session.parameters}))
            await self._relay(session, reader, writer, a_reader, a_writer)
            done.set_result(True)
            if session.session_type != "Port" and session.active():
                self._end_session(session, "Terminated")
        finally:
            writers = self._client_writers.get(session.id, [])
            if writer in writers:
                writers.remove(writer)
            if stream == "ctl" and session.active():
                self._end_session(session, "Terminated")

    def _session_start_problem(self, session: Session, node) -> str | None:
        """What the agent would refuse at session start (as the real agent validates the preferences)."""
        if node is None or node.agent is None:
            return f"TargetNotConnected: {session.target} is not connected."
        if session.session_type != "Standard_Stream":
            return None
        prefs = session.preferences
        from . import prefs as _prefs  # local import: only the control plane process needs moto

        return _prefs.encryption_problem(self.registry, prefs)

    async def _open_agent_stream(self, session: Session, node, stream):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        key = (session.id, stream)
        self._pending[key] = future
        node.agent.send({
            "t": "open",
            "session": session.id,
            "stream": stream,
            "type": session.session_type,
            "document": session.document,
            "parameters": session.parameters,
            "run_as": session.run_as,
            "shell_profile": session.preferences.get("shellProfile", {}).get("linux", ""),
        })
        try:
            a_hello, a_reader, a_writer, done = await asyncio.wait_for(future, OPEN_TIMEOUT)
        except asyncio.TimeoutError:
            self._pending.pop(key, None)
            return f"TargetNotConnected: {session.target} did not answer the session request."
        if not a_hello.get("ok", True):
            done.set_result(False)
            return a_hello.get("error") or "the agent refused the session"
        return a_hello, a_reader, a_writer, done

    async def _relay(self, session: Session, c_reader, c_writer, a_reader, a_writer) -> None:
        delay = self.registry.faults.stream_rtt / 2
        node = self.registry.nodes.get(session.target)
        record = session.session_type == "Standard_Stream"

        def from_agent(data: bytes) -> None:
            session.last_activity = time.time()
            if record:
                session.transcript.extend(data)

        def from_client(data: bytes) -> None:
            session.last_activity = time.time()

        up = asyncio.ensure_future(common.pump(c_reader, a_writer, from_client, delay))
        down = asyncio.ensure_future(self._pump_down(a_reader, c_writer, from_agent, delay, node))
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down.done():
            # The agent closed the stream (the shell exited): let the client drain, then close.
            up.cancel()
        else:
            await down
        a_writer.close()

    async def _pump_down(self, a_reader, c_writer, on_data, delay, node) -> None:
        await common.pump(a_reader, _NoEofWriter(c_writer), on_data, delay)
        if node is not None and (node.agent is None or node.agent.dropping):
            # The agent went away: on AWS the plugin's websocket stays open and silent. So here.
            while node.agent is None or node.agent.dropping:
                await asyncio.sleep(0.5)
                if c_writer.is_closing():
                    return
            return
        try:
            c_writer.write_eof()
        except (OSError, RuntimeError):
            pass

    # --- the nodes' own egress ----------------------------------------------------------------------------
    async def _egress(self, request_line: bytes, reader, writer) -> None:
        """An HTTP proxy for what the nodes fetch themselves (curl of a presigned S3 URL, for one).

        A node reaches the lab's S3 only while it has an S3 path (a NAT route, an S3 gateway endpoint on its
        route table, or an S3 interface endpoint); without one the request fails, as it would on AWS.
        """
        headers = []
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            headers.append(line)
        try:
            method, target, version = request_line.decode("latin-1").split()
        except ValueError:
            return
        node = None
        for line in headers:
            name, _sep, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "proxy-authorization" and value.strip().lower().startswith("basic "):
                try:
                    node_id = base64.b64decode(value.strip()[6:]).decode().split(":", 1)[0]
                except ValueError:
                    node_id = ""
                node = self.registry.nodes.get(node_id)
        if method == "CONNECT":
            host, _sep, port_text = target.rpartition(":")
            port, path = int(port_text or 443), ""
        else:
            url = urllib.parse.urlsplit(target)
            host, port = url.hostname or "", url.port or 80
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
        to_lab = (host, port) == self.endpoint_address
        if node is None or (to_lab and not self.registry.s3_reachable(node)):
            await asyncio.sleep(1.0)  # no route: the connection goes nowhere (shortened from a real timeout)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            kept = [h for h in headers if not h.lower().startswith((b"proxy-", b"connection:"))]
            up_writer.write(f"{method} {path} {version}\r\n".encode("latin-1") + b"".join(kept)
                            + b"Connection: close\r\n\r\n")
        upward = asyncio.ensure_future(common.pump(reader, up_writer))
        await common.pump(up_reader, writer)
        upward.cancel()
        up_writer.close()

    # --- sessions ----------------------------------------------------------------------------------------
    def terminate(self, session_id: str) -> None:
        """Thread-safe TerminateSession."""
        self.soon(self._terminate, session_id)

    def _terminate(self, session_id: str) -> None:
        session = self.registry.sessions.get(session_id)
        if session is None or not session.active():
            return
        self._end_session(session, "Terminated")

    def _end_session(self, session: Session, status: str) -> None:
        if not session.active():
            return
        session.status = status
        session.ended = time.time()
        node = self.registry.nodes.get(session.target)
        if node is not None and node.agent is not None:
            node.agent.send({"t": "close", "session": session.id})
        for writer in list(self._client_writers.pop(session.id, [])):
            if not writer.is_closing():
                writer.close()
        threading.Thread(target=self.on_session_end, args=(session,), daemon=True).start()

    async def _housekeeping(self) -> None:
        """Idle timeouts and maximum durations, as the service enforces them."""
        while True:
            await asyncio.sleep(1.0)
            stamp = time.time()
            for session in list(self.registry.sessions.values()):
                if not session.active():
                    continue
                idle = float(session.preferences.get("idleSessionTimeout") or 20) * 60
                longest = session.preferences.get("maxSessionDuration")
                if stamp - session.last_activity > idle:
                    session.details = "idle timeout"
                    self._end_session(session, "Terminated")
                elif longest and stamp - session.started > float(longest) * 60:
                    session.details = "maximum session duration"
                    self._end_session(session, "Terminated")

    # --- commands ----------------------------------------------------------------------------------------
    async def run_on_agent(self, command_id: str, node_id: str, message: dict, timeout: float) -> dict | None:
        node = self.registry.nodes.get(node_id)
        if node is None or node.agent is None:
            return None
        future = asyncio.get_running_loop().create_future()
        self._command_waiters[(command_id, node_id)] = future
        node.agent.send(message)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self._command_waiters.pop((command_id, node_id), None)
            return None


class _NoEofWriter:
    """A writer whose EOF the relay decides, not the pump (see _pump_down)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        return False
