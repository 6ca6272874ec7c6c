"""The lab's data channel on the wire: a WebSocket client written here from the protocol (with the collection's codec,
whose bytes are checked against AWS's plugin in the unit tests) drives the lab's StreamUrl directly, to see what a
client sees: the handshake, acknowledgements, retransmission, resume, the end, and a clear end for bad input."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.parse
import urllib.request

import pytest
from labhelpers import wait_until
from ssm_lab.codec import dc
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

WIRE_FAULTS = {"ack_timeout": 2, "resume_window": 2, "open_window": 3}


@pytest.fixture(scope="module")
def lab(start_lab):
    with start_lab("wire-lab", "--nodes", "1", "--provisioned", "--faults", json.dumps(WIRE_FAULTS)) as lab:
        yield lab


class Client:
    """One WebSocket on a session's StreamUrl, with the client's half of the protocol spelled out."""

    def __init__(self, response: dict, token: str | None = None) -> None:
        self.session_id = response["SessionId"]
        self.ws = connect(response["StreamUrl"], open_timeout=10, max_size=None, compression=None).__enter__()
        self.ws.send(dc.token_message(response["TokenValue"] if token is None else token, "test-client"))
        self.next_input = 0
        self.output = bytearray()
        self.closed_output: str | None = None

    def recv(self, timeout: float = 5.0):
        return dc.decode(self.ws.recv(timeout))

    def send_input(self, payload: bytes, payload_type: int = dc.OUTPUT_DATA) -> dc.AgentMessage:
        message = dc.data(dc.INPUT, self.next_input, payload, payload_type)
        self.next_input += 1
        self.ws.send(message.encode())
        return message

    def handshake(self) -> dict:
        request = self.recv()
        assert (request.message_type, request.sequence_number, request.payload_type) == (dc.OUTPUT, 0,
                                                                                          dc.HANDSHAKE_REQUEST)
        self.ws.send(dc.acknowledge(request).encode())
        payload, _session = dc.handshake_response(request.json())
        self.send_input(payload, dc.HANDSHAKE_RESPONSE)
        seen = {}
        while set(seen) != {"ack", "complete"}:
            message = self.recv()
            if message.message_type == dc.ACK:
                seen["ack"] = dc.acknowledged_sequence(message)
            elif message.payload_type == dc.HANDSHAKE_COMPLETE:
                self.ws.send(dc.acknowledge(message).encode())
                seen["complete"] = message.sequence_number
        assert seen == {"ack": 0, "complete": 1}
        return request.json()

    def read_until(self, text: bytes, timeout: float = 10.0, acknowledge: bool = True) -> list:
        """Output messages until ``text`` has appeared in the output; returns them."""
        deadline, messages = time.monotonic() + timeout, []
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {bytes(self.output)!r}"
            message = self.recv(left)
            if message.message_type == dc.CHANNEL_CLOSED:
                self.closed_output = message.json()["Output"]
                raise AssertionError(f"channel_closed ({self.closed_output!r}) before {text!r}")
            if message.message_type != dc.OUTPUT:
                continue
            messages.append(message)
            if acknowledge:
                self.ws.send(dc.acknowledge(message).encode())
            if message.payload_type == dc.OUTPUT_DATA and (not messages[:-1] or message.sequence_number not in
                                                           [m.sequence_number for m in messages[:-1]]):
                self.output.extend(message.payload)
        return messages

    def wait_closed(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while self.closed_output is None:
            message = self.recv(max(deadline - time.monotonic(), 0.01))
            if message.message_type == dc.OUTPUT:
                self.ws.send(dc.acknowledge(message).encode())
                if message.payload_type == dc.OUTPUT_DATA:
                    self.output.extend(message.payload)
            elif message.message_type == dc.CHANNEL_CLOSED:
                self.closed_output = message.json()["Output"]
        return self.closed_output

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def shell(lab):
    """A shell session's client, its handshake done; closed at the end."""
    client = Client(lab.ssm.start_session(Target=lab.node_ids[0]))
    try:
        client.handshake()
        yield client
    finally:
        client.close()


def session_state(lab, session_id: str) -> dict:
    for state in ("Active", "History"):
        for session in lab.ssm.describe_sessions(State=state)["Sessions"]:
            if session["SessionId"] == session_id:
                return session
    return {}


def ended(lab, session_id: str, status: str, timeout: float = 15.0) -> dict:
    return wait_until(lambda: (s := session_state(lab, session_id)).get("Status") == status and s, timeout,
                      what=f"session {session_id} {status}: {session_state(lab, session_id)}")


def test_a_shell_session_on_the_wire(lab):
    node = lab.node_ids[0]
    client = Client(lab.ssm.start_session(Target=node))
    try:
        request = client.handshake()
        assert request["AgentVersion"].count(".") == 3
        assert request["RequestedClientActions"][0]["ActionParameters"]["SessionType"] == "Standard_Stream"
        sent = client.send_input(b"echo wire-$((6*7))\n")
        messages = client.read_until(b"wire-42")
        assert all(m.sequence_number >= 2 for m in messages)
        assert session_state(lab, client.session_id)["Status"] == "Connected"
        # The lab resends, unchanged, each output message a client does not acknowledge.
        client.send_input(b"echo again-$((2*3))\n")
        unacked = {m.sequence_number: m for m in client.read_until(b"again-6", acknowledge=False)}
        resent = {}
        while set(resent) != set(unacked):
            again = client.recv(3.0)
            if again.message_type == dc.OUTPUT and again.sequence_number in unacked:
                resent[again.sequence_number] = again
                client.ws.send(dc.acknowledge(again).encode())
        assert all((resent[n].message_id, resent[n].payload) == (unacked[n].message_id, unacked[n].payload)
                   for n in unacked)
        assert sent.sequence_number == 1
        client.send_input(b"exit\n")
        assert client.wait_closed() == ""
        ended(lab, client.session_id, "Terminated")
    finally:
        client.close()


def test_the_terminal_size_reaches_the_shell(lab):
    with shell(lab) as client:
        client.send_input(dc.size_payload(132, 40), dc.SIZE)
        # The size reaches the pty beside the stream, not in it: ask until the shell sees it (bounded).
        for _attempt in range(10):
            client.send_input(b"stty size\n")
            try:
                client.read_until(b"40 132", timeout=1.0)
                break
            except (AssertionError, TimeoutError):
                continue
        assert b"40 132" in client.output


def test_terminate_session_sends_channel_closed(lab):
    with shell(lab) as client:
        client.send_input(b"echo up\n")
        client.read_until(b"up")
        lab.ssm.terminate_session(SessionId=client.session_id)
        assert client.wait_closed() == ""
        ended(lab, client.session_id, "Terminated")


def test_a_dropped_websocket_resumes_where_it_was(lab):
    response = lab.ssm.start_session(Target=lab.node_ids[0])
    client = Client(response)
    client.handshake()
    client.send_input(b"export MARK=kept-$((5*5))\n")
    client.read_until(b"export MARK")
    client.ws.socket.close()  # no close frame: the connection just breaks
    resumed = lab.ssm.resume_session(SessionId=response["SessionId"])
    again = Client({**response, "TokenValue": resumed["TokenValue"]})
    again.next_input = client.next_input
    try:
        again.send_input(b"echo $MARK\n")
        again.read_until(b"kept-25")
    finally:
        again.close()


def _good_session_still_works(lab) -> None:
    with shell(lab) as client:
        client.send_input(b"echo fine\n")
        client.read_until(b"fine")


def _bad_digest(message: dc.AgentMessage) -> bytes:
    frame = bytearray(message.encode())
    frame[80] ^= 0xFF
    return bytes(frame)


BAD_WIRE = {
    "a bad digest": lambda: _bad_digest(dc.data(dc.INPUT, 1, b"echo x\n")),
    "a truncated frame": lambda: dc.data(dc.INPUT, 1, b"echo x\n").encode()[:60],
    "an unknown message type": lambda: dc.AgentMessage("fancy_thing", b"{}", 1).encode(),
}


@pytest.mark.parametrize("bad", sorted(BAD_WIRE))
def test_bad_input_on_the_wire_ends_the_session_with_its_reason(lab, bad):
    with shell(lab) as client:
        client.ws.send(BAD_WIRE[bad]())
        reason = client.wait_closed()
        assert reason, "channel_closed gives the reason"
        session = ended(lab, client.session_id, "Failed")
        assert "broke the protocol" in session["Details"], session
    _good_session_still_works(lab)


def test_a_wrong_token_is_refused_with_the_reason(lab):
    response = lab.ssm.start_session(Target=lab.node_ids[0])
    client = Client(response, token="not-the-token")
    try:
        assert client.wait_closed().startswith("InvalidToken")
    finally:
        client.close()
    _good_session_still_works(lab)


def test_a_client_that_never_acknowledges_loses_its_session(lab):
    with shell(lab) as client:
        client.send_input(b"echo unheard\n")
        session = ended(lab, client.session_id, "Failed", timeout=WIRE_FAULTS["ack_timeout"] + 10)
        assert "acknowledged nothing" in session["Details"], session
    _good_session_still_works(lab)


def test_a_client_that_disappears_ends_its_session_after_the_resume_window(lab):
    client = Client(lab.ssm.start_session(Target=lab.node_ids[0]))
    client.handshake()
    client.send_input(b"echo hi\n")
    client.read_until(b"hi")
    client.ws.socket.close()
    session = ended(lab, client.session_id, "Terminated", timeout=WIRE_FAULTS["resume_window"] + 10)
    assert "did not resume" in session["Details"], session
    _good_session_still_works(lab)


def test_a_session_whose_client_never_connects_fails_in_bounded_time(lab):
    response = lab.ssm.start_session(Target=lab.node_ids[0])
    assert session_state(lab, response["SessionId"])["Status"] == "Connecting"
    session = ended(lab, response["SessionId"], "Failed", timeout=WIRE_FAULTS["open_window"] + 10)
    assert "did not open the data channel" in session["Details"], session


def test_the_lab_closes_with_the_closing_handshake_so_a_late_message_loses_nothing(lab):
    """After channel_closed the lab sends its close frame and keeps TCP open until the client answers it. Were it to
    close TCP at once, a message the client sent meanwhile (an acknowledgement, typed input) would meet a closed
    socket, the kernel would answer with a reset, and the reset would discard what the client had not read yet:
    channel_closed and its reason. A raw socket, read only at the end, plays the slow client."""
    response = lab.ssm.start_session(Target=lab.node_ids[0])
    url = urllib.parse.urlsplit(response["StreamUrl"])
    protocol = ClientProtocol(parse_uri(response["StreamUrl"]), max_size=None)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        def flush() -> None:
            for data in protocol.data_to_send():
                if data:
                    sock.sendall(data)

        def messages(timeout: float) -> list:
            """What comes within ``timeout`` (or until EOF), every Output message acknowledged at once."""
            sock.settimeout(timeout)
            found = []
            try:
                while True:
                    data = sock.recv(65536)
                    protocol.receive_data(data) if data else protocol.receive_eof()
                    for event in protocol.events_received():
                        if getattr(event, "opcode", None) is Opcode.BINARY:
                            found.append(message := dc.decode(event.data))
                            if message.message_type == dc.OUTPUT and protocol.state is State.OPEN:
                                protocol.send_binary(dc.acknowledge(message).encode())
                    flush()
                    if not data:
                        return found
            except TimeoutError:
                return found

        protocol.send_request(protocol.connect())
        flush()
        while protocol.state is not State.OPEN:
            protocol.receive_data(sock.recv(65536))
        protocol.events_received()  # the upgrade's Response
        protocol.send_text(dc.token_message(response["TokenValue"], "slow-client").encode())
        flush()
        request = messages(0.2)[0]
        payload, _session = dc.handshake_response(request.json())
        protocol.send_binary(dc.data(dc.INPUT, 0, payload, dc.HANDSHAKE_RESPONSE).encode())
        flush()
        messages(0.5)  # HandshakeComplete and the shell's first output
        lab.ssm.terminate_session(SessionId=response["SessionId"])
        time.sleep(1.0)  # the lab has sent channel_closed and its close frame: nothing is read yet
        protocol.send_binary(dc.data(dc.INPUT, 1, b"typed late\n").encode())
        flush()
        time.sleep(0.3)
        kinds = [message.message_type for message in messages(5.0)]
    assert dc.CHANNEL_CLOSED in kinds, kinds


def test_the_lab_counts_the_data_channels_round_trips(lab):
    """What the transport benchmark reads from /_lab/calls: data messages each way, and round trips (client data
    that follows output): two commands, each typed after the answer to the one before, are two round trips."""
    def stream(method: str = "GET") -> dict:
        request = urllib.request.Request(f"{lab.endpoint}/_lab/calls", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["stream"]

    stream("DELETE")
    with shell(lab) as client:
        client.send_input(b"echo one-$((1))\n")
        client.read_until(b"one-1")
        client.send_input(b"echo two-$((1+1))\n")
        client.read_until(b"two-2")
        counts = stream()
    assert counts["sessions"] == 1 and counts["input_messages"] == 2 and counts["round_trips"] == 2, counts
    assert counts["output_messages"] >= 2, counts
