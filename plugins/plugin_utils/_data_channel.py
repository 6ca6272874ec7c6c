# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Session Manager's data channel, the messages both ends exchange over the session's WebSocket (pure logic).

After the WebSocket to the session's ``StreamUrl`` is open, the client sends one text frame, the token message
(token_message). From then on every WebSocket binary frame carries exactly one AgentMessage:

    offset  size  field
         0     4  header length, uint32: 116 (the offset of the payload length)
         4    32  message type, ASCII, right-padded with spaces (NULs accepted on receipt)
        36     4  schema version, uint32: 1
        40     8  created date, uint64, Unix time in milliseconds, never 0
        48     8  sequence number, int64: per direction, from 0, sequenced messages only
        56     8  flags, uint64: 0 on data, 3 on acknowledgements
        64    16  message id: a UUID whose two 8-byte halves are swapped on the wire
        80    32  SHA-256 of the payload
       112     4  payload type, uint32
       116     4  payload length, uint32
       120     n  payload

Every ``input_stream_data`` (client to service) and ``output_stream_data`` (service to client) is acknowledged by an
``acknowledge`` message whose JSON payload names its type, id and sequence number; the sender resends what is not
acknowledged (Resender), the receiver processes each sequence number once and in order (InOrder). The service speaks
first with a HandshakeRequest (the session type and its properties), the client answers with a HandshakeResponse and
the service ends the handshake with HandshakeComplete. ``channel_closed`` ends the session.

Port forwarding sessions of current agents carry an smux v1 byte stream in their Output payloads (SmuxReader,
smux_frame). Everything here is standard library only and knows nothing about sockets.
"""

import dataclasses
import hashlib
import json
import struct
import time
import uuid

HEADER_LENGTH = 116  # what the header length field holds: the offset of the payload length field
PREFIX = 120  # bytes before the payload
SCHEMA_VERSION = 1
CLIENT_VERSION = "1.2.677.0"  # the session-manager-plugin release whose protocol this is
AGENT_VERSION = "3.3.1142.0"  # a current agent: port sessions multiplexed, no smux keep-alive
BASIC_PORT_AGENT_VERSION = "3.0.161.0"  # an agent old enough for one connection per port session

INPUT = "input_stream_data"
OUTPUT = "output_stream_data"
ACK = "acknowledge"
CHANNEL_CLOSED = "channel_closed"
START_PUBLICATION = "start_publication"
PAUSE_PUBLICATION = "pause_publication"
SEQUENCED = (INPUT, OUTPUT)
UNCHECKED = (START_PUBLICATION, PAUSE_PUBLICATION)  # types whose header and digest are not checked on receipt

# Payload types
OUTPUT_DATA = 1
ERROR = 2
SIZE = 3
PARAMETER = 4
HANDSHAKE_REQUEST = 5
HANDSHAKE_RESPONSE = 6
HANDSHAKE_COMPLETE = 7
ENC_CHALLENGE_REQUEST = 8
ENC_CHALLENGE_RESPONSE = 9
FLAG = 10
STDERR = 11
EXIT_CODE = 12

# Flag payload values
DISCONNECT_TO_PORT = 1
TERMINATE_SESSION = 2
CONNECT_TO_PORT_ERROR = 3

ACK_FLAGS = 3
MAX_CHUNK = 1024  # the plugin's largest payload of stdin or TCP data

_HEAD = struct.Struct(">I32sIQqQ16s32sII")  # everything before the payload: PREFIX (120) bytes


class DataChannelError(ValueError):
    """A frame or message that breaks the protocol; the text says what was wrong."""


def now_ms() -> int:
    return int(time.time() * 1000)


def uuid_to_wire(message_id: uuid.UUID) -> bytes:
    """The 16 bytes of a message id as the header carries them: the UUID's second half first."""
    raw = message_id.bytes
    return raw[8:] + raw[:8]


def uuid_from_wire(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw[8:16] + raw[:8])


@dataclasses.dataclass
class AgentMessage:
    """One message of the data channel, decoded."""

    message_type: str
    payload: bytes = b""
    payload_type: int = 0
    sequence_number: int = 0
    flags: int = 0
    message_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    created_date: int = dataclasses.field(default_factory=now_ms)
    schema_version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        kind = self.message_type.encode("ascii")
        if not kind or len(kind) > 32:
            raise DataChannelError(f"message type {self.message_type!r} must be 1 to 32 ASCII characters")
        head = _HEAD.pack(HEADER_LENGTH, kind.ljust(32, b" "), self.schema_version, self.created_date,
                          self.sequence_number, self.flags, uuid_to_wire(self.message_id),
                          hashlib.sha256(self.payload).digest(), self.payload_type, len(self.payload))
        return head + self.payload

    def json(self):
        """The payload as JSON (handshakes, acknowledgements, channel_closed, sizes)."""
        try:
            return json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise DataChannelError(f"{self.message_type} payload type {self.payload_type} is not JSON: {error}")

    def flag(self) -> int:
        """The value of a Flag payload."""
        if len(self.payload) != 4:
            raise DataChannelError(f"a flag payload is 4 bytes, not {len(self.payload)}")
        return struct.unpack(">I", self.payload)[0]


def decode(frame: bytes) -> AgentMessage:
    """An AgentMessage from one WebSocket binary frame, with every check the plugin makes on receipt (header length,
    type, date, payload length, SHA-256 digest), each failure a DataChannelError that says which."""
    if len(frame) < PREFIX:
        raise DataChannelError(f"a message is at least {PREFIX} bytes, this frame has {len(frame)}")
    (header_length, kind, schema, created, sequence, flags, raw_id, digest, payload_type,
     payload_length) = _HEAD.unpack_from(frame)
    message_type = kind.rstrip(b" \x00").decode("ascii", errors="replace")
    payload = bytes(frame[header_length + 4:]) if 0 < header_length <= len(frame) - 4 else b""
    message = AgentMessage(message_type, payload, payload_type, sequence, flags, uuid_from_wire(raw_id), created,
                           schema)
    if message_type in UNCHECKED:
        return message
    if header_length != HEADER_LENGTH:
        raise DataChannelError(f"header length {header_length}, not {HEADER_LENGTH}")
    if not message_type:
        raise DataChannelError("the message type is empty")
    if not created:
        raise DataChannelError(f"{message_type}: the created date is 0")
    if payload_length != len(payload):
        raise DataChannelError(f"{message_type}: the header says {payload_length} payload bytes, the frame holds "
                               f"{len(payload)} (truncated?)")
    if payload and hashlib.sha256(payload).digest() != digest:
        raise DataChannelError(f"{message_type} {sequence}: the payload's SHA-256 digest does not match")
    return message


def data(message_type: str, sequence_number: int, payload: bytes, payload_type: int = OUTPUT_DATA) -> AgentMessage:
    """A sequenced message: ``input_stream_data`` from the client, ``output_stream_data`` from the service."""
    return AgentMessage(message_type, payload, payload_type, sequence_number, 0)


def flag_message(message_type: str, sequence_number: int, value: int) -> AgentMessage:
    return data(message_type, sequence_number, struct.pack(">I", value), FLAG)


def acknowledge(message: AgentMessage, flags: int = ACK_FLAGS) -> AgentMessage:
    """The acknowledgement of a sequenced message (the plugin sends flags 3)."""
    body = {"AcknowledgedMessageType": message.message_type,
            "AcknowledgedMessageId": str(message.message_id),
            "AcknowledgedMessageSequenceNumber": message.sequence_number,
            "IsSequentialMessage": True}
    return AgentMessage(ACK, json.dumps(body, separators=(",", ":")).encode(), 0, 0, flags)


def acknowledged_sequence(message: AgentMessage) -> int:
    """The sequence number an ``acknowledge`` message acknowledges (the only field acknowledgements are matched by)."""
    body = message.json()
    number = body.get("AcknowledgedMessageSequenceNumber") if isinstance(body, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise DataChannelError(f"an acknowledgement without a sequence number: {body!r}")
    return number


def channel_closed(session_id: str, target: str, output: str = "") -> AgentMessage:
    """The service's end of a session; ``output``, when given, is what the plugin shows as the reason."""
    created = now_ms()
    body = {"MessageId": str(uuid.uuid4()),
            "CreatedDate": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created / 1000)) + f".{created % 1000:03d}Z",
            "DestinationId": target, "SessionId": session_id, "MessageType": CHANNEL_CLOSED, "SchemaVersion": 1,
            "Output": output}
    return AgentMessage(CHANNEL_CLOSED, json.dumps(body).encode(), 0, 0, 0, created_date=created)


def token_message(token: str, client_id: str, request_id: str | None = None,
                  client_version: str = CLIENT_VERSION) -> str:
    """The text frame that opens the data channel."""
    return json.dumps({"MessageSchemaVersion": "1.0", "RequestId": request_id or str(uuid.uuid4()),
                       "TokenValue": token, "ClientId": client_id, "ClientVersion": client_version})


def read_token_message(text) -> dict:
    """The fields of a token message; DataChannelError when it is not one."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError) as error:
        raise DataChannelError(f"the first frame is not the token message: {error}")
    if not isinstance(body, dict) or not isinstance(body.get("TokenValue"), str):
        raise DataChannelError("the first frame is not the token message: no TokenValue")
    return body


def handshake_request(session_type: str, properties: dict | None = None,
                      agent_version: str = AGENT_VERSION) -> bytes:
    """The payload of a HandshakeRequest asking for ``session_type`` (Standard_Stream, InteractiveCommands,
    NonInteractiveCommands, Port) with the document's properties, values as strings."""
    action = {"ActionType": "SessionType",
              "ActionParameters": {"SessionType": session_type, "Properties": properties or {}}}
    return json.dumps({"AgentVersion": agent_version, "RequestedClientActions": [action]}).encode()


def handshake_response(request: dict, client_version: str = CLIENT_VERSION) -> tuple[bytes, dict]:
    """The client's answer to a HandshakeRequest body: (payload, the session type action or {})."""
    processed, errors, session = [], [], {}
    for action in request.get("RequestedClientActions") or []:
        kind = action.get("ActionType")
        if kind == "SessionType":
            session = action.get("ActionParameters") or {}
            processed.append({"ActionType": kind, "ActionStatus": 1, "ActionResult": None, "Error": ""})
        else:  # KMSEncryption and anything newer: not supported by this client
            error = f"Unsupported action {kind}"
            processed.append({"ActionType": kind, "ActionStatus": 3, "ActionResult": None, "Error": error})
            errors.append(error)
    body = {"ClientVersion": client_version, "ProcessedClientActions": processed, "Errors": errors or None}
    return json.dumps(body, separators=(",", ":")).encode(), session


def handshake_complete(customer_message: str = "", nanoseconds: int = 0) -> bytes:
    return json.dumps({"HandshakeTimeToComplete": nanoseconds, "CustomerMessage": customer_message}).encode()


def size_payload(cols: int, rows: int) -> bytes:
    return json.dumps({"cols": cols, "rows": rows}, separators=(",", ":")).encode()


def version_newer(version: str, than: str) -> bool:
    """Whether a four-part agent version is newer than another, as the plugin compares them (a malformed version
    is never newer)."""
    try:
        mine, theirs = [int(p) for p in version.split(".")], [int(p) for p in than.split(".")]
    except ValueError:
        return False
    return len(mine) == len(theirs) == 4 and mine > theirs


class InOrder:
    """The receiving side of one direction: which sequenced messages to acknowledge and which to process, in order.

    ``receive`` returns (acknowledge?, messages now ready in order). A message ahead of the next expected one is
    kept and acknowledged; one already processed is acknowledged again (a resend whose acknowledgement was lost) and
    not processed twice."""

    def __init__(self, limit: int = 10000) -> None:
        self.expected = 0
        self.limit = limit
        self._ahead: dict[int, AgentMessage] = {}

    def receive(self, message: AgentMessage) -> tuple[bool, list]:
        number = message.sequence_number
        if number < self.expected:
            return True, []
        if number > self.expected:
            if len(self._ahead) >= self.limit and number not in self._ahead:
                return False, []
            self._ahead.setdefault(number, message)
            return True, []
        ready = [message]
        self.expected += 1
        while self.expected in self._ahead:
            ready.append(self._ahead.pop(self.expected))
            self.expected += 1
        return True, ready


class Resender:
    """The sending side of one direction: numbers sequenced messages, keeps them until acknowledged, and says which
    are due for a resend (``due``), each at most once per ``timeout`` seconds."""

    def __init__(self, message_type: str, timeout: float = 0.3) -> None:
        self.message_type = message_type
        self.timeout = timeout
        self.next_sequence = 0
        self._unacked: dict[int, list] = {}  # sequence -> [message, frame, last sent, first sent (monotonic)]

    def message(self, payload: bytes, payload_type: int = OUTPUT_DATA) -> tuple[AgentMessage, bytes]:
        """The next sequenced message and its frame, kept until acknowledged."""
        message = data(self.message_type, self.next_sequence, payload, payload_type)
        frame = message.encode()
        now = time.monotonic()
        self._unacked[self.next_sequence] = [message, frame, now, now]
        self.next_sequence += 1
        return message, frame

    def acknowledged(self, sequence_number: int) -> bool:
        return self._unacked.pop(sequence_number, None) is not None

    def due(self, now: float | None = None) -> list:
        """The frames to send again now, oldest first."""
        now = time.monotonic() if now is None else now
        frames = []
        for number in sorted(self._unacked):
            entry = self._unacked[number]
            if now - entry[2] >= self.timeout:
                entry[2] = now
                frames.append(entry[1])
        return frames

    def all_frames(self) -> list:
        """Every unacknowledged frame, oldest first (to send on a new WebSocket after a resume)."""
        return [self._unacked[n][1] for n in sorted(self._unacked)]

    @property
    def pending(self) -> int:
        return len(self._unacked)

    def oldest_age(self, now: float | None = None) -> float:
        """How long the oldest unacknowledged message has waited since it was last sent (0 when none)."""
        if not self._unacked:
            return 0.0
        now = time.monotonic() if now is None else now
        return now - min(entry[2] for entry in self._unacked.values())

    def oldest_wait(self, now: float | None = None) -> float:
        """How long the oldest unacknowledged message has waited since it was first sent, resends included (0 when
        none): how long the other end has not acknowledged it."""
        if not self._unacked:
            return 0.0
        now = time.monotonic() if now is None else now
        return now - min(entry[3] for entry in self._unacked.values())


# --- smux v1, the stream multiplexer of port forwarding sessions --------------------------------------------------
SMUX_VERSION = 1
SYN, FIN, PSH, NOP = 0, 1, 2, 3
_SMUX = struct.Struct("<BBHI")  # version, command, length (little-endian), stream id (little-endian)
SMUX_MAX = 65535


def smux_frame(command: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One smux v1 frame (several when a PSH payload exceeds the 16-bit length)."""
    if len(payload) <= SMUX_MAX:
        return _SMUX.pack(SMUX_VERSION, command, len(payload), stream_id) + payload
    return b"".join(smux_frame(command, stream_id, payload[i:i + SMUX_MAX]) for i in range(0, len(payload), SMUX_MAX))


class SmuxReader:
    """Reassembles smux v1 frames from the Output payloads they arrive in, split or joined anyhow."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data_bytes: bytes) -> list:
        """The complete frames so far, as (command, stream id, payload); DataChannelError on a frame that is not
        smux v1."""
        self._buffer.extend(data_bytes)
        frames = []
        while len(self._buffer) >= _SMUX.size:
            version, command, length, stream_id = _SMUX.unpack_from(self._buffer)
            if version != SMUX_VERSION or command > NOP:
                raise DataChannelError(f"not an smux v1 frame: version {version}, command {command}")
            if len(self._buffer) < _SMUX.size + length:
                break
            payload = bytes(self._buffer[_SMUX.size:_SMUX.size + length])
            del self._buffer[:_SMUX.size + length]
            frames.append((command, stream_id, payload))
        return frames
