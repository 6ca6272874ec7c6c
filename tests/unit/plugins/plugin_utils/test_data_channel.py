"""The data channel's messages (plugins/plugin_utils/_data_channel.py): frames checked byte by byte against fixtures
written from the protocol's description, and against frames AWS's session-manager-plugin 1.2.677.0 really sent
(fixtures/plugin_1.2.677.0_shell.json); acknowledgements, ordering, resends and smux reassembly."""

import hashlib
import json
import os
import struct
import uuid

import pytest
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel as dc

with open(os.path.join(os.path.dirname(__file__), "fixtures", "plugin_1.2.677.0_shell.json"), encoding="utf-8") as f:
    REAL = {key: value for key, value in json.load(f).items() if not key.startswith("_")}

MESSAGE_ID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")


def spec_frame(message_type: bytes, sequence: int, flags: int, payload_type: int, payload: bytes) -> bytes:
    """A frame laid out field by field as the protocol's table gives it (not through the module's struct)."""
    return b"".join([
        (116).to_bytes(4, "big"),
        message_type + b" " * (32 - len(message_type)),
        (1).to_bytes(4, "big"),
        (1733356800123).to_bytes(8, "big"),
        sequence.to_bytes(8, "big", signed=True),
        flags.to_bytes(8, "big"),
        bytes.fromhex("8899aabbccddeeff") + bytes.fromhex("0011223344556677"),  # the UUID's halves swapped
        hashlib.sha256(payload).digest(),
        payload_type.to_bytes(4, "big"),
        len(payload).to_bytes(4, "big"),
        payload,
    ])


def test_a_message_encodes_to_the_layout_of_the_protocol():
    message = dc.AgentMessage("input_stream_data", b"echo hello; exit\n", 1, 7, 0, MESSAGE_ID, 1733356800123)
    expected = spec_frame(b"input_stream_data", 7, 0, 1, b"echo hello; exit\n")
    assert message.encode() == expected
    assert len(expected) == 120 + 17
    assert dc.decode(expected) == message


def test_the_header_is_120_bytes_before_the_payload():
    assert dc._HEAD.size == dc.PREFIX == dc.HEADER_LENGTH + 4 == 120  # pylint: disable=protected-access


def test_an_empty_payload_still_carries_the_digest_of_nothing():
    frame = dc.AgentMessage("start_publication", b"", 0, 0, 0, MESSAGE_ID, 1).encode()
    assert frame[80:112] == hashlib.sha256(b"").digest() and len(frame) == 120


@pytest.mark.parametrize("name", ["ack_of_handshake_request", "handshake_response", "size", "keystrokes",
                                  "handshake_request_sent"])
def test_frames_of_the_real_plugin_decode_and_encode_back_byte_for_byte(name):
    frame = bytes.fromhex(REAL[name])
    message = dc.decode(frame)
    assert message.encode() == frame


def test_what_the_real_plugin_sent_means_what_the_protocol_says():
    ack = dc.decode(bytes.fromhex(REAL["ack_of_handshake_request"]))
    request = dc.decode(bytes.fromhex(REAL["handshake_request_sent"]))
    assert (ack.message_type, ack.flags, ack.payload_type, ack.sequence_number) == ("acknowledge", 3, 0, 0)
    body = ack.json()
    # The plugin names our message by the id we wrote with its halves swapped: the swap is read back correctly.
    assert body["AcknowledgedMessageId"] == str(request.message_id)
    assert dc.acknowledged_sequence(ack) == request.sequence_number == 0
    assert body["AcknowledgedMessageType"] == "output_stream_data" and body["IsSequentialMessage"] is True

    response = dc.decode(bytes.fromhex(REAL["handshake_response"]))
    assert (response.message_type, response.payload_type, response.sequence_number) == ("input_stream_data", 6, 0)
    assert response.json()["ProcessedClientActions"][0]["ActionStatus"] == 1
    ours, _session = dc.handshake_response(request.json())
    assert json.loads(ours) == response.json()  # the client side answers as the real plugin does

    size = dc.decode(bytes.fromhex(REAL["size"]))
    assert (size.payload_type, size.sequence_number, size.json()) == (3, 1, {"cols": 300, "rows": 100})
    assert dc.size_payload(300, 100) == size.payload
    keys = dc.decode(bytes.fromhex(REAL["keystrokes"]))
    assert (keys.payload_type, keys.sequence_number, keys.payload) == (1, 2, b"echo hello; exit\n")

    token = dc.read_token_message(REAL["token_message"])
    assert token["TokenValue"] == "tok-123" and token["ClientVersion"] == "1.2.677.0"
    assert set(json.loads(dc.token_message("t", "c"))) == set(token)


def test_an_acknowledgement_is_shaped_as_the_plugins():
    real = dc.decode(bytes.fromhex(REAL["ack_of_handshake_request"]))
    acked = dc.AgentMessage("output_stream_data", b"x", 5, 0, 0, uuid.UUID(real.json()["AcknowledgedMessageId"]))
    ours = dc.acknowledge(acked)
    assert ours.payload == real.payload and ours.flags == real.flags and ours.payload_type == 0


@pytest.mark.parametrize("damage, reason", [
    (lambda f: f[:119], "at least 120 bytes"),
    (lambda f: f[:-3], "truncated"),
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "digest does not match"),
    (lambda f: (100).to_bytes(4, "big") + f[4:], "header length 100"),
    (lambda f: f[:4] + b" " * 32 + f[36:], "type is empty"),
    (lambda f: f[:40] + bytes(8) + f[48:], "created date is 0"),
])
def test_a_damaged_frame_is_refused_saying_why(damage, reason):
    frame = spec_frame(b"input_stream_data", 3, 0, 1, b"some keystrokes")
    with pytest.raises(dc.DataChannelError, match=reason):
        dc.decode(damage(frame))


def test_publication_messages_skip_the_checks_as_the_plugin_does():
    frame = spec_frame(b"pause_publication", 0, 0, 0, b"")
    assert dc.decode(frame[:40] + bytes(8) + frame[48:]).message_type == "pause_publication"


def test_nul_padding_is_accepted_on_receipt():
    frame = spec_frame(b"acknowledge", 0, 3, 0, b"{}")
    assert dc.decode(frame[:4] + b"acknowledge".ljust(32, b"\0") + frame[36:]).message_type == "acknowledge"


def test_in_order_delivery_buffers_gaps_and_acknowledges_duplicates_without_processing_them():
    receiver = dc.InOrder()
    message = [dc.data("input_stream_data", n, bytes([n])) for n in range(4)]
    assert receiver.receive(message[1]) == (True, [])  # ahead: kept and acknowledged at once
    assert receiver.receive(message[3]) == (True, [])
    assert receiver.receive(message[0]) == (True, [message[0], message[1]])
    assert receiver.receive(message[0]) == (True, [])  # a resend of what was processed: acknowledged again only
    assert receiver.receive(message[2]) == (True, [message[2], message[3]])
    assert receiver.expected == 4


def test_a_full_reorder_buffer_stops_acknowledging_what_it_cannot_keep():
    receiver = dc.InOrder(limit=1)
    assert receiver.receive(dc.data("input_stream_data", 5, b"a")) == (True, [])
    assert receiver.receive(dc.data("input_stream_data", 6, b"b")) == (False, [])


def test_unacknowledged_messages_are_resent_each_timeout_until_acknowledged():
    sender = dc.Resender("output_stream_data", timeout=0.3)
    first, frame0 = sender.message(b"one")
    _second, frame1 = sender.message(b"two")
    assert (first.sequence_number, sender.next_sequence, sender.pending) == (0, 2, 2)
    sent = sender._unacked[0][2]  # pylint: disable=protected-access
    assert sender.due(sent + 0.1) == []
    assert sender.due(sent + 0.31) == [frame0, frame1]
    assert sender.due(sent + 0.4) == []  # not again before another timeout
    assert sender.acknowledged(0) and not sender.acknowledged(0)
    assert sender.due(sent + 0.7) == [frame1] and sender.all_frames() == [frame1]
    assert sender.acknowledged(1) and sender.pending == 0 and sender.oldest_age() == 0.0


def test_flags_channel_closed_and_handshakes():
    flag = dc.flag_message("input_stream_data", 4, dc.TERMINATE_SESSION)
    assert flag.payload == struct.pack(">I", 2) and flag.payload_type == 10 and dc.decode(flag.encode()).flag() == 2
    closed = dc.decode(dc.channel_closed("s-1", "i-1", "bye").encode())
    assert closed.message_type == "channel_closed" and closed.json()["Output"] == "bye"
    assert closed.json()["SessionId"] == "s-1" and closed.sequence_number == 0
    request = json.loads(dc.handshake_request("Port", {"portNumber": "22"}))
    assert request["AgentVersion"] == dc.AGENT_VERSION
    payload, session = dc.handshake_response({"RequestedClientActions": [
        request["RequestedClientActions"][0], {"ActionType": "KMSEncryption", "ActionParameters": {}}]})
    body = json.loads(payload)
    assert session == {"SessionType": "Port", "Properties": {"portNumber": "22"}}
    assert [a["ActionStatus"] for a in body["ProcessedClientActions"]] == [1, 3]
    assert body["Errors"] == ["Unsupported action KMSEncryption"]


@pytest.mark.parametrize("version, than, newer", [
    ("3.3.1142.0", "3.0.196.0", True), ("3.0.161.0", "3.0.196.0", False), ("3.0.196.0", "3.0.196.0", False),
    ("3.3", "3.0.196.0", False), ("x.1.2.3", "1.0.0.0", False), ("3.1.1511.1", "3.1.1511.0", True),
])
def test_agent_versions_compare_as_the_plugin_compares_them(version, than, newer):
    assert dc.version_newer(version, than) is newer


def test_smux_frames_reassemble_across_any_split():
    stream = (dc.smux_frame(dc.SYN, 3) + dc.smux_frame(dc.PSH, 3, b"x" * 2400) + dc.smux_frame(dc.FIN, 3))
    assert stream[:8] == bytes([1, 0, 0, 0, 3, 0, 0, 0])  # version 1, SYN, length 0, stream 3 (little-endian)
    assert stream[8:16] == bytes([1, 2]) + (2400).to_bytes(2, "little") + (3).to_bytes(4, "little")
    reader, frames = dc.SmuxReader(), []
    for start in range(0, len(stream), 1024):  # the plugin's 1,024-byte messages
        frames += reader.feed(stream[start:start + 1024])
    assert frames == [(dc.SYN, 3, b""), (dc.PSH, 3, b"x" * 2400), (dc.FIN, 3, b"")]
    with pytest.raises(dc.DataChannelError, match="not an smux v1 frame"):
        dc.SmuxReader().feed(b"garbage!")
