"""The lab's ssmmessages/ec2messages: the channel agents connect out to, and the session data relay.

Four kinds of connection arrive on the message port:
- ``{"t": "agent", "node": id}`` (one JSON line first): an agent's control channel (the real agent's outbound 443
  poll). JSON lines both ways: heartbeats and command results up; session opens, resizes, closes, command runs and
  drops down.
- ``{"t": "agent-data", "session": id, "stream": n, "ok": bool, "error": str}``: the agent's side of one
  session stream, then raw bytes.
- ``GET /v1/data-channel/<session id>`` with a WebSocket upgrade: a client (AWS's session-manager-plugin, the
  lab's stand-in) on the session's StreamUrl, speaking Session Manager's data channel protocol (wire.py).
- Any other HTTP request: the nodes' own egress through the lab (a proxy gated by their network path).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import urllib.parse
import threading
import time
from xml.sax.saxutils import escape

from .. import common
from . import authz, endpoint_policy, wire
from .registry import Registry, Session

log = logging.getLogger("ssm_lab.messages")

OPEN_TIMEOUT = 15.0
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
        self._housekeeper: asyncio.Task | None = None
        self._command_waiters: dict[tuple[str, str], asyncio.Future] = {}
        self.wire_sessions: dict[str, wire.WireSession] = {}  # session id -> its data channel (WebSocket clients)
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
        self._housekeeper = self.loop.create_task(self._housekeeping())
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
            if wire.looks_like_websocket(first):
                await wire.serve(self, first, reader, writer)
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

    # --- clients (Session Manager's data channel on the StreamUrl: wire.py) ----------------------------------
    def _session_start_problem(self, session: Session, node) -> str | None:
        """What the agent would refuse at session start (as the real agent validates the preferences)."""
        if node is None or node.agent is None:
            return f"TargetNotConnected: {session.target} is not connected."
        if session.session_type != "Standard_Stream":
            return None
        prefs = session.preferences
        from . import prefs as _prefs  # local import: only the control plane process needs moto

        return _prefs.encryption_problem(self.registry, prefs)

    async def attach_wire(self, session: Session, conn) -> None:
        """A client's WebSocket for ``session``, its token checked: a new data channel, or a resumed one."""
        channel = self.wire_sessions.get(session.id)
        if channel is None:
            node = self.registry.nodes.get(session.target)
            problem = self._session_start_problem(session, node)
            if problem:
                conn.send(wire.dc.channel_closed(session.id, session.target, problem).encode())
                conn.close()
                session.details = problem
                self._end_session(session, "Failed")
                return
            channel = self.wire_sessions[session.id] = wire.WireSession(self, session, node)
        await channel.attach(conn)

    def wire_session_ended(self, channel, status: str, details: str) -> None:
        if self.wire_sessions.get(channel.session.id) is channel:
            del self.wire_sessions[channel.session.id]
        channel.cancel()
        if details and not channel.session.details:
            channel.session.details = details
        self._end_session(channel.session, status)

    async def open_agent_stream(self, session: Session, node, stream):
        """The agent's end of one stream of ``session``: (hello, reader, writer, done) or why it did not open."""
        if node is None or node.agent is None:
            return f"TargetNotConnected: {session.target} is not connected."
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
        refusal = self._endpoint_refusal(node, method, path, headers) if to_lab and method != "CONNECT" else None
        if refusal is not None:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: "
                         + str(len(refusal)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (b"" if method == "HEAD" else refusal))
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

    _S3_ACTIONS = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject", "DELETE": "s3:DeleteObject"}

    def _endpoint_refusal(self, node, method: str, path: str, headers: list[bytes]) -> bytes | None:
        """S3's AccessDenied body when the VPC endpoint carrying the node's S3 request (a presigned URL: the signer's
        identity, path-style) refuses it; None when it lets it through or no endpoint carries it."""
        action = self._S3_ACTIONS.get(method)
        url = urllib.parse.urlsplit(path)
        bucket, _sep, key = url.path.lstrip("/").partition("/")
        if action is None or not key or not _BUCKET.match(bucket):
            return None  # not an object of a bucket (the lab's own /_lab/ paths among them)
        authorization = next((h.decode("latin-1").split(":", 1)[1].strip() for h in headers
                              if h.lower().startswith(b"authorization:")), "")
        scope = urllib.parse.parse_qs(url.query).get("X-Amz-Credential", [""])[0]
        if authorization:
            scope = authorization.partition("Credential=")[2].split(",", 1)[0]
        if scope and scope.split("/")[3:4] != ["s3"]:
            return None  # not an S3 request
        key_id = authz.access_key(authorization, url.query)
        who = endpoint_policy.ANONYMOUS
        if key_id:
            user_id, arn = authz.identity(self.registry.account_id, self.registry.node_region(node), key_id)
            who = endpoint_policy.from_caller(arn, user_id)
        resource = f"arn:{authz.partition_of(self.registry.region)}:s3:::{bucket}/{urllib.parse.unquote(key)}"
        denial = self.registry.endpoint_denial(node, "s3", action, resource, who=who)
        if denial is None:
            return None
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                f"<Message>{escape(denial.message(quoted=True))}</Message>"
                f"<RequestId>{common.random_hex(8).upper()}</RequestId></Error>").encode()

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
        channel = self.wire_sessions.get(session.id)
        if channel is not None and not channel.ended:
            # A data channel: channel_closed once the client has acknowledged its output, then this again.
            common.spawn(channel.end(status, session.details))
            return
        session.status = status
        session.ended = time.time()
        node = self.registry.nodes.get(session.target)
        if node is not None and node.agent is not None:
            node.agent.send({"t": "close", "session": session.id})
        threading.Thread(target=self.on_session_end, args=(session,), daemon=True).start()

    async def _housekeeping(self) -> None:
        """Idle timeouts and maximum durations, as the service enforces them."""
        while True:
            await asyncio.sleep(1.0)
            stamp = time.time()
            for session in list(self.registry.sessions.values()):
                if not session.active():
                    continue
                window = self.registry.faults.open_window
                if session.status == "Connecting" and session.id not in self.wire_sessions \
                        and stamp - session.started > window:
                    session.details = f"the client did not open the data channel within {window:g} s"
                    self._end_session(session, "Failed")
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
