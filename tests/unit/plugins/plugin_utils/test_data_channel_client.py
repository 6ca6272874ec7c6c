"""The data channel client (plugins/plugin_utils/_data_channel_client.py) against a scripted service on a real local
WebSocket: the handshake, acknowledgement of output, in-order delivery, resends of unacknowledged input, and resume
with a new token after the connection breaks."""

import threading

import pytest
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel as dc
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel_client as client_module
from websockets.sync.server import serve


class Service:
    """A WebSocket server whose connections run ``script(ws, number)`` in turn (number: 0 for the first)."""

    def __init__(self, *scripts):
        self.scripts = list(scripts)
        self.tokens = []
        self.errors = []
        self.connections = 0
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/v1/data-channel/s-1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handle(self, ws):
        number, self.connections = self.connections, self.connections + 1
        self.tokens.append(dc.read_token_message(ws.recv(5))["TokenValue"])
        try:
            self.scripts[number](ws)
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.errors.append(error)

    def close(self):
        self.server.shutdown()


def recv(ws, timeout=5):
    return dc.decode(ws.recv(timeout))


def handshake(ws, session_type="Standard_Stream"):
    ws.send(dc.data(dc.OUTPUT, 0, dc.handshake_request(session_type), dc.HANDSHAKE_REQUEST).encode())
    acked = set()
    while True:
        message = recv(ws)
        if message.message_type == dc.ACK:
            acked.add(dc.acknowledged_sequence(message))
        elif message.payload_type == dc.HANDSHAKE_RESPONSE:
            assert message.json()["ProcessedClientActions"][0]["ActionStatus"] == 1
            ws.send(dc.acknowledge(message).encode())
            break
    assert acked == {0}
    ws.send(dc.data(dc.OUTPUT, 1, dc.handshake_complete("hello"), dc.HANDSHAKE_COMPLETE).encode())


@pytest.fixture
def service():
    made = []

    def make(*scripts):
        made.append(Service(*scripts))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_output_is_acknowledged_and_delivered_once_in_order(service):
    done = threading.Event()

    def script(ws):
        handshake(ws)
        # Sequence 3 before 2, and 2 twice: delivered as 2, 3, each once; every copy acknowledged.
        for number, payload in ((3, b"world"), (2, b"hello "), (2, b"hello ")):
            ws.send(dc.data(dc.OUTPUT, number, payload).encode())
        acked = [dc.acknowledged_sequence(recv(ws)) for _count in range(4)]  # + the HandshakeComplete's
        assert sorted(acked) == [1, 2, 2, 3]
        done.wait(5)
        ws.send(dc.channel_closed("s-1", "i-1", "").encode())

    server = service(script)
    received = []
    channel = client_module.DataChannelClient("s-1", "token-1", server.url, on_data=received.append)
    channel.open()
    assert (channel.session_type, channel.customer_message) == ("Standard_Stream", "hello")
    done.set()
    assert channel.closed.wait(5) and channel.close_output == ""
    assert b"".join(received) == b"hello world"
    assert server.errors == []


def test_unacknowledged_input_is_resent_and_survives_a_resume(service):
    first_copy = {}

    def first(ws):
        handshake(ws)
        message = recv(ws)
        while message.payload_type != dc.OUTPUT_DATA:
            message = recv(ws)
        first_copy["message"] = message
        again = recv(ws, 2)  # not acknowledged: the client sends it again, unchanged
        assert (again.sequence_number, again.message_id, again.payload) == (message.sequence_number,
                                                                            message.message_id, message.payload)
        ws.socket.close()  # the connection breaks

    def second(ws):
        message, before = recv(ws), first_copy["message"]  # after the resume, the unacknowledged input first
        assert (message.sequence_number, message.message_id) == (before.sequence_number, before.message_id)
        ws.send(dc.acknowledge(message).encode())
        ws.send(dc.data(dc.OUTPUT, 2, b"after the resume").encode())
        recv(ws)  # its acknowledgement
        ws.send(dc.channel_closed("s-1", "i-1", "done").encode())

    server = service(first, second)
    received, resumed = [], []

    def resume():
        resumed.append(True)
        return "token-2"

    channel = client_module.DataChannelClient("s-1", "token-1", server.url, on_data=received.append, resume=resume)
    channel.open()
    channel.send(b"echo hi\r")
    assert channel.closed.wait(10), channel.lost
    assert (resumed, server.tokens, channel.close_output) == ([True], ["token-1", "token-2"], "done")
    assert b"".join(received) == b"after the resume"
    assert server.errors == []


def test_a_broken_connection_without_resume_ends_the_channel(service):
    def script(ws):
        handshake(ws)
        ws.socket.close()

    server = service(script)
    channel = client_module.DataChannelClient("s-1", "token-1", server.url)
    channel.open()
    assert channel.closed.wait(5)
    assert channel.lost == "Session: s-1 timed out."
    with pytest.raises(client_module.DataChannelClosed):
        channel.send(b"too late")


# --- bad input: each a clear failure in bounded time ------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe",
    "",
    "ws:///v1/data-channel/s-1",
    "s-1",
])
def test_a_stream_url_that_is_not_a_websocket_url_is_refused_by_name(url):
    channel = client_module.DataChannelClient("s-1", "token-1", url)
    with pytest.raises(client_module.DataChannelClosed, match="is not a WebSocket URL .*StartSession"):
        channel.open(timeout=5)
    assert "role=" not in client_module.stream_url_problem(url)


def test_a_stream_url_that_answers_plain_http_is_named(tmp_path):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"not a websocket")

        def log_message(self, *_args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}/v1/data-channel/s-1"
        channel = client_module.DataChannelClient("s-1", "token-1", url)
        with pytest.raises(client_module.DataChannelClosed, match=f"StreamUrl {url} did not answer as a WebSocket"):
            channel.open(timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_connection_reset_during_the_upgrade_fails_the_open_by_name(monkeypatch):
    """The peer accepts the TCP connection and resets it at once. Depending on whether the reset comes before or after
    the client's request, websockets raises ConnectionClosedError or InvalidMessage from its handshake: either must
    come out as the channel's own failure, naming the StreamUrl (the first escaped from the tunnel's opening thread)."""
    import socket
    import struct

    from websockets.exceptions import ConnectionClosedError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)

    def reset():
        connection, _address = listener.accept()
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    threading.Thread(target=reset, daemon=True).start()
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/data-channel/s-1"
    try:
        with pytest.raises(client_module.DataChannelClosed, match=url):
            client_module.DataChannelClient("s-1", "token-1", url).open(timeout=5)
    finally:
        listener.close()

    def closed(*_args, **_kwargs):
        raise ConnectionClosedError(None, None)

    monkeypatch.setattr(client_module, "connect", closed)  # the first of the two, every time
    with pytest.raises(client_module.DataChannelClosed,
                       match=f"cannot open the data channel {url}: the connection was closed during the WebSocket"):
        client_module.DataChannelClient("s-1", "token-1", url).open(timeout=5)


def test_a_refused_upgrade_names_the_token():
    server = serve(lambda ws: None, "127.0.0.1", 0,
                   process_request=lambda connection, request: connection.respond(403, "Forbidden\n"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/v1/data-channel/s-1?role=publish_subscribe"
        channel = client_module.DataChannelClient("s-1", "token-1", url)
        with pytest.raises(client_module.DataChannelClosed) as failure:
            channel.open(timeout=5)
        assert "refused the data channel of session s-1: HTTP 403" in str(failure.value)
        assert "token is not valid or has expired" in str(failure.value)
        assert "role=" not in str(failure.value)
    finally:
        server.shutdown()


def test_an_expired_token_fails_the_open_with_the_service_reason(service):
    def script(ws):  # as the service answers a token it no longer takes: channel_closed, then the end
        ws.send(dc.channel_closed("s-1", "i-1", "InvalidToken: the session token is not valid").encode())

    server = service(script)
    channel = client_module.DataChannelClient("s-1", "expired-token", server.url)
    with pytest.raises(client_module.DataChannelClosed,
                       match="the service closed the data channel of session s-1: InvalidToken"):
        channel.open(timeout=5)
    assert server.tokens == ["expired-token"] and server.errors == []


def test_a_session_terminated_mid_task_ends_sends_with_the_reason(service):
    def script(ws):
        handshake(ws)
        recv(ws)  # the HandshakeComplete's acknowledgement
        ws.send(dc.channel_closed("s-1", "i-1", "Session terminated by alice").encode())

    server = service(script)
    channel = client_module.DataChannelClient("s-1", "token-1", server.url)
    channel.open()
    assert channel.closed.wait(5)
    with pytest.raises(client_module.DataChannelClosed, match="Session terminated by alice"):
        channel.send(b"more input")
    assert server.errors == []


def test_a_far_end_that_stops_acknowledging_ends_the_channel_in_bounded_time(service):
    stop = threading.Event()

    def script(ws):
        handshake(ws)
        stop.wait(10)  # reads nothing more, acknowledges nothing

    server = service(script)
    channel = client_module.DataChannelClient("s-1", "token-1", server.url, ack_timeout=1.0)
    channel.open()
    channel.send(b"echo never acknowledged\r")
    try:
        assert channel.closed.wait(5)
        assert channel.lost == "the session's far end acknowledged no input for 1 s: the node or the service " \
                               "stopped answering"
        with pytest.raises(client_module.DataChannelClosed, match="acknowledged no input"):
            channel.send(b"more")
    finally:
        stop.set()


def test_input_beyond_the_window_waits_for_acknowledgements_each_reported_with_what_is_still_pending(
        service, monkeypatch):
    monkeypatch.setattr(client_module, "WINDOW", 3)
    got = {"data": b"", "most_unacknowledged": 0}

    def script(ws):
        handshake(ws)
        held = []
        while len(got["data"]) < 10240:
            message = recv(ws)
            if message.message_type != dc.INPUT or message.payload_type != dc.OUTPUT_DATA:
                continue
            held.append(message)
            got["data"] += message.payload
            got["most_unacknowledged"] = max(got["most_unacknowledged"], len(held))
            if len(held) == 3 or len(got["data"]) == 10240:  # the window is full: acknowledge what it holds
                for each in held:
                    ws.send(dc.acknowledge(each).encode())
                held.clear()
        ws.send(dc.channel_closed("s-1", "i-1", "").encode())

    server = service(script)
    pending = []
    channel = client_module.DataChannelClient("s-1", "token-1", server.url, on_acknowledged=pending.append)
    channel.open()
    data = bytes(range(256)) * 40  # 10 pieces of 1,024 bytes, more than three windows
    channel.send(data)  # returns once the last piece is sent: it waited for acknowledgements in between
    assert channel.closed.wait(10), channel.lost
    assert got["data"] == data and got["most_unacknowledged"] == 3, got
    assert pending and pending[-1] == 0 and max(pending) < 3, pending  # every acknowledgement, counted down to none
    assert server.errors == []
