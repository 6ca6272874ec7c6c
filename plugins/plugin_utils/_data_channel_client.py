# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The client's end of a Session Manager data channel, over the synchronous client of the ``websockets`` package.

    channel = DataChannelClient(response["SessionId"], response["TokenValue"], response["StreamUrl"],
                                on_data=sys.stdout.buffer.write)
    channel.open()                  # WebSocket, token message, handshake; channel.session_type, .properties
    channel.send(b"echo hello\\n")  # input_stream_data, resent until acknowledged
    channel.closed.wait()           # channel_closed (channel.close_output) or the connection lost for good

What it does, as AWS's session-manager-plugin does (see _data_channel.py for the messages):
- acknowledges every output message and hands each payload to ``on_data`` once, in order;
- answers the HandshakeRequest (SessionType only: KMSEncryption is refused, so a session that requires it fails);
- keeps every input message until it is acknowledged and resends the oldest ones every RESEND_TICK seconds once
  they are RESEND_AFTER seconds old; stops taking input while WINDOW messages are unacknowledged;
- when the WebSocket breaks, asks ``resume`` (a callable doing ResumeSession, returning the new token or None) and
  carries on over a new WebSocket with both sequence counters and the unacknowledged input;
- ends the channel, with the reason in ``lost``, when the far end acknowledges no input for ``ack_timeout`` seconds
  (the node or the service stopped answering), and refuses a StreamUrl that is not a WebSocket URL.

Threads: one reads the WebSocket, one resends; ``send`` may be called from any thread. Callbacks (``on_data``,
``on_flag``, ``on_acknowledged`` with the count of input messages still unacknowledged) run on the reader thread and
must not block for long.
"""

import threading
import time
import urllib.parse
import uuid

try:
    from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel as dc
except ImportError:  # loaded by path, beside the codec (the lab's session-manager-plugin stand-in)
    import bastionless_data_channel as dc  # pylint: disable=import-error

try:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.sync.client import connect
    HAS_WEBSOCKETS = True
except ImportError:  # pragma: no cover - reported by the caller
    HAS_WEBSOCKETS = False

RESEND_AFTER = 0.2  # the plugin's first retransmission timeout
RESEND_TICK = 0.1
WINDOW = 2000  # unacknowledged input messages before send() waits
CONNECT_TIMEOUT = 45.0  # the plugin's dial timeout
HANDSHAKE_TIMEOUT = 30.0
ACK_TIMEOUT = 60.0  # seconds the oldest input may wait for its acknowledgement before the channel is given up


class DataChannelClosed(Exception):
    """The data channel is over: the service closed it, or the WebSocket broke and the session could not resume."""


class DataChannelClient:
    """One session's data channel (see the module's description)."""

    def __init__(self, session_id: str, token: str, stream_url: str, on_data=None, on_flag=None, resume=None,
                 chunk: int = dc.MAX_CHUNK, client_id: str | None = None, ack_timeout: float = ACK_TIMEOUT,
                 on_acknowledged=None) -> None:
        if not HAS_WEBSOCKETS:
            raise DataChannelClosed("the Python package websockets is required for Session Manager's data channel: "
                                    "pip install websockets")
        self.session_id = session_id
        self.token = token
        self.stream_url = stream_url
        self.on_data = on_data or (lambda payload: None)
        self.on_flag = on_flag or (lambda value: None)
        self.on_acknowledged = on_acknowledged or (lambda pending: None)  # input acknowledged: the count still pending
        self.resume = resume
        self.chunk = chunk
        self.ack_timeout = ack_timeout
        self.client_id = client_id or str(uuid.uuid4())
        self.session_type = ""
        self.properties: dict = {}
        self.agent_version = ""
        self.customer_message = ""
        self.handshake_done = threading.Event()
        self.closed = threading.Event()
        self.close_output = ""  # channel_closed's Output: the reason the service gave, if any
        self.service_closed = False  # whether the service ended the channel (channel_closed), with a reason or not
        self.lost = ""  # why the connection was lost for good (no channel_closed)
        self._out = dc.Resender(dc.INPUT, timeout=RESEND_AFTER)
        self._inbound = dc.InOrder()
        self._lock = threading.Lock()  # the Resender and the WebSocket's sends
        self._acked = threading.Condition(self._lock)
        self._ws = None
        self._connected_at = time.monotonic()
        self._threads: list = []

    # --- the connection ----------------------------------------------------------------------------------
    def _connect(self) -> None:
        problem = stream_url_problem(self.stream_url)
        if problem:
            raise DataChannelClosed(problem)
        try:
            # Entered as a context manager (websockets 17 deprecates a bare connect()); closed by close().
            ws = connect(self.stream_url, open_timeout=CONNECT_TIMEOUT, close_timeout=1, max_size=None,
                         compression=None, ping_interval=None, user_agent_header=None).__enter__()
        except InvalidStatus as error:
            status = error.response.status_code
            why = (" (the session's token is not valid or has expired: start a new session)"
                   if status in (401, 403) else "")
            raise DataChannelClosed(f"the service refused the data channel of session {self.session_id}: "
                                    f"HTTP {status} from {_host(self.stream_url)}{why}") from None
        except (InvalidHandshake, InvalidURI) as error:
            raise DataChannelClosed(f"the StreamUrl {_host(self.stream_url)} did not answer as a WebSocket: "
                                    f"{error}") from None
        except (OSError, TimeoutError, ConnectionClosed) as error:
            why = "the connection was closed during the WebSocket upgrade" if isinstance(error, ConnectionClosed) \
                else error
            raise DataChannelClosed(f"cannot open the data channel {_host(self.stream_url)}: {why}") from None
        ws.send(dc.token_message(self.token, self.client_id))
        self._connected_at = time.monotonic()
        self._ws = ws

    def open(self, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        """Open the WebSocket and wait for the handshake; DataChannelClosed when the service refuses or is silent."""
        self._connect()
        for target in (self._read, self._resend):
            thread = threading.Thread(target=target, name=f"data-channel-{target.__name__.strip('_')}", daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        while not self.handshake_done.wait(0.05):
            if self.closed.is_set():
                if self.close_output:
                    raise DataChannelClosed(f"the service closed the data channel of session {self.session_id}: "
                                            f"{self.close_output}")
                raise DataChannelClosed(self.lost or "the service closed the data channel")
            if time.monotonic() > deadline:
                self.close()
                raise DataChannelClosed(f"no handshake from the service in {timeout:g} s")

    def close(self) -> None:
        """Leave: close the WebSocket (the service sees the client go, as when the plugin exits)."""
        if not self.closed.is_set():
            self.lost = self.lost or "closed by the client"
        self._set_closed()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def _set_closed(self) -> None:
        """The channel is over: wake whoever waits to send or for acknowledgements."""
        self.closed.set()
        with self._acked:
            self._acked.notify_all()

    # --- sending -----------------------------------------------------------------------------------------
    def _send_frame(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            ws.send(frame)
        except (ConnectionClosed, OSError):
            pass  # the reader sees the break and resumes; the frame is resent from the Resender

    def send(self, data: bytes, payload_type: int = dc.OUTPUT_DATA) -> None:
        """Input for the session, in messages of at most ``chunk`` bytes, kept until acknowledged."""
        pieces = [data[start:start + self.chunk] for start in range(0, max(len(data), 1), self.chunk)]
        while pieces:
            with self._acked:  # once for as many pieces as the window takes: the reader thread waits for this lock
                while self._out.pending >= WINDOW and not self.closed.is_set():
                    self._acked.wait(1.0)
                if self.closed.is_set():
                    raise DataChannelClosed(self.close_output or self.lost or "the data channel is closed")
                room = min(len(pieces), WINDOW - self._out.pending)
                for piece in pieces[:room]:
                    _message, frame = self._out.message(piece, payload_type)
                    self._send_frame(frame)
                del pieces[:room]

    def send_flag(self, value: int) -> None:
        self.send(dc.flag_message(dc.INPUT, 0, value).payload, dc.FLAG)

    def send_size(self, cols: int, rows: int) -> None:
        self.send(dc.size_payload(cols, rows), dc.SIZE)

    @property
    def pending(self) -> int:
        """Input messages sent and not yet acknowledged (send() waits while WINDOW of them are)."""
        with self._lock:
            return self._out.pending

    def wait_acknowledged(self, timeout: float) -> bool:
        """Wait until the service has acknowledged every input message; whether it has."""
        deadline = time.monotonic() + timeout
        with self._acked:
            while self._out.pending and not self.closed.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked.wait(left)
            return not self._out.pending

    def _resend(self) -> None:
        while not self.closed.wait(RESEND_TICK):
            with self._lock:
                for frame in self._out.due():
                    self._send_frame(frame)
                # Counted from the last (re)connection too: a resume does not use up the far end's time to answer.
                waited = min(self._out.oldest_wait(), time.monotonic() - self._connected_at)
            if waited > self.ack_timeout:
                self.lost = (f"the session's far end acknowledged no input for {self.ack_timeout:g} s: the node or "
                             "the service stopped answering")
                self.close()
                return

    # --- receiving ---------------------------------------------------------------------------------------
    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                frame = self._ws.recv()
            except (ConnectionClosed, OSError, EOFError) as error:
                if self.closed.is_set():
                    return
                if not self._resume(error):
                    return
                continue
            if isinstance(frame, str):
                continue  # the service sends binary frames only
            try:
                self._handle(dc.decode(frame))
            except dc.DataChannelError:
                continue  # dropped unacknowledged, as the plugin does: the service resends it

    def _resume(self, error) -> bool:
        """The WebSocket broke: ResumeSession and a new one, or the end."""
        token = None
        if self.resume is not None:
            try:
                token = self.resume()
            except Exception as failure:  # noqa: BLE001 - any failure of the API call ends the session
                self.lost = f"ResumeSession failed: {failure}"
        if not token:
            self.lost = self.lost or f"Session: {self.session_id} timed out."
            self._set_closed()
            return False
        self.token = token
        try:
            self._connect()
        except DataChannelClosed as failure:
            self.lost = str(failure)
            self._set_closed()
            return False
        with self._lock:
            for frame in self._out.all_frames():
                self._send_frame(frame)
        return True

    def _handle(self, message) -> None:
        kind = message.message_type
        if kind == dc.ACK:
            number = dc.acknowledged_sequence(message)
            with self._acked:
                if not self._out.acknowledged(number):
                    return
                self._acked.notify_all()
                pending = self._out.pending
            self.on_acknowledged(pending)
        elif kind == dc.CHANNEL_CLOSED:
            self.close_output = _text_field(message, "Output")
            self.service_closed = True
            self._set_closed()
        elif kind == dc.OUTPUT:
            acknowledge, ready = self._inbound.receive(message)
            if acknowledge:
                with self._lock:
                    self._send_frame(dc.acknowledge(message).encode())
            for each in ready:
                self._process(each)

    def _process(self, message) -> None:
        kind = message.payload_type
        if kind == dc.HANDSHAKE_REQUEST:
            request = message.json()
            payload, session = dc.handshake_response(request if isinstance(request, dict) else {})
            self.agent_version = str(request.get("AgentVersion", "")) if isinstance(request, dict) else ""
            self.session_type = str(session.get("SessionType", ""))
            self.properties = dict(session.get("Properties") or {})
            self.send(payload, dc.HANDSHAKE_RESPONSE)
        elif kind == dc.HANDSHAKE_COMPLETE:
            self.customer_message = _text_field(message, "CustomerMessage")
            self.handshake_done.set()
        elif kind == dc.FLAG:
            self.on_flag(message.flag())
        elif kind in (dc.OUTPUT_DATA, dc.STDERR, dc.EXIT_CODE):
            self.on_data(message.payload)


def stream_url_problem(url) -> str:
    """Why a StreamUrl cannot be a data channel ("" when it can): it must be a ws:// or wss:// URL with a host."""
    parts = urllib.parse.urlsplit(str(url or ""))
    if parts.scheme in ("ws", "wss") and parts.hostname:
        return ""
    return (f"the StreamUrl {_host(url) or '(empty)'} is not a WebSocket URL (ws:// or wss:// with a host): pass the "
            "StreamUrl of the StartSession or ResumeSession response unchanged")


def _host(url) -> str:
    """A URL without its query (the service's StreamUrl carries nothing secret there, but nobody needs it in a
    message)."""
    return str(url or "").split("?", 1)[0]


def _text_field(message, name: str) -> str:
    """A text field of a JSON payload (channel_closed's Output, HandshakeComplete's CustomerMessage); "" when the
    payload is not a JSON object or has no such field."""
    try:
        body = message.json()
    except dc.DataChannelError:
        return ""
    return str(body.get(name) or "") if isinstance(body, dict) else ""
