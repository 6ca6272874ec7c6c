"""The drop_channel_every fault: the lab breaks each session's WebSocket every N seconds, as the service does about
hourly, and a client that resumes (ResumeSession, a new token message, both sequence counters kept) loses nothing and
gets nothing twice: a command running across several drops completes with its full output exactly once."""

from __future__ import annotations

import json
import re
import threading

import pytest
from ssm_lab.aws.registry import FaultModel
from ssm_lab.client.plugin import client_module

LINES = 300  # the command prints one numbered line every 10 ms: about 3 s, across several 1-second drops


@pytest.fixture(scope="module")
def lab(start_lab):
    with start_lab("drops-lab", "--nodes", "1", "--provisioned", "--faults", json.dumps({"resume_window": 5})) as lab:
        yield lab


def resumes(lab) -> int:
    return sum(count for name, count in lab.api_calls()["calls"].items() if name.endswith("ResumeSession"))


@pytest.mark.parametrize("value, error", [(-1, "drop_channel_every must be 0"), ("soon", "could not convert")])
def test_drop_channel_every_refuses_what_is_not_a_number_of_seconds(value, error):
    with pytest.raises(ValueError, match=error):
        FaultModel().update({"drop_channel_every": value})


@pytest.mark.parametrize("name", ["stall_channel_after", "half_close_channel_after"])
def test_the_stall_and_half_close_faults_are_off_by_default_shown_and_refuse_negative_seconds(name):
    faults = FaultModel()
    assert faults.as_dict()[name] == 0.0
    faults.update({name: "0.5"})
    assert faults.as_dict()[name] == 0.5
    with pytest.raises(ValueError, match=f"{name} must be 0"):
        faults.update({name: -1})


def test_expired_session_tokens_is_off_by_default_and_takes_0_or_1():
    faults = FaultModel()
    assert faults.as_dict()["expired_session_tokens"] == 0.0
    faults.update({"expired_session_tokens": "1"})
    assert faults.as_dict()["expired_session_tokens"] == 1.0
    with pytest.raises(ValueError, match="expired_session_tokens must be 0"):
        faults.update({"expired_session_tokens": 2})


def test_drop_channel_every_is_shown_and_off_by_default():
    faults = FaultModel()
    assert faults.as_dict()["drop_channel_every"] == 0.0
    faults.update({"drop_channel_every": "20"})
    assert faults.as_dict()["drop_channel_every"] == 20.0


def test_a_command_running_across_drops_completes_with_its_output_exactly_once(lab):
    node = lab.node_ids[0]
    lab.wait_online(node)
    # Set on the running lab, as an operator would; sessions started before read it too.
    shown = json.loads(lab.cli("faults", "--drop-channel-every", "1").stdout)
    assert shown["drop_channel_every"] == 1.0
    try:
        before = resumes(lab)
        response = lab.ssm.start_session(Target=node)
        output, done = bytearray(), threading.Event()

        def on_data(payload: bytes) -> None:
            output.extend(payload)
            if re.search(rb"\r?\nEND-2\r?\n", output):
                done.set()

        channel = client_module.DataChannelClient(
            response["SessionId"], response["TokenValue"], response["StreamUrl"], on_data=on_data,
            resume=lambda: lab.ssm.resume_session(SessionId=response["SessionId"])["TokenValue"])
        channel.open()
        try:
            # The pty echoes the input; $((1+1)) keeps the echo from matching the end mark.
            channel.send(f"for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.01; done; echo END-$((1+1))\n"
                         .encode())
            assert done.wait(60), f"no end mark; lost: {channel.lost!r}; output tail: {bytes(output[-400:])!r}"
            assert not channel.closed.is_set(), channel.lost or channel.close_output
        finally:
            channel.close()
        numbers = [int(n) for n in re.findall(rb"line-(\d+)\r\n", bytes(output))]
        assert numbers == list(range(1, LINES + 1)), "every line once and in order"
        assert resumes(lab) - before >= 2, "the channel dropped and resumed while the command ran"
    finally:
        lab.cli("faults", "--drop-channel-every", "0")


def test_a_native_port_forward_keeps_its_connection_across_drops(lab):
    """ssm_tunnel's native transport (plugins/plugin_utils/_port_forward.py): one TCP connection through a
    multiplexed port session, used while the channel drops and resumes, loses and repeats nothing."""
    import socket
    import urllib.request

    from ssm_lab.codec import load_collection_module
    from ssm_lab.harness.testing import EchoServer

    forward = load_collection_module("_port_forward.py", "bastionless_port_forward")
    node = lab.node_ids[0]
    lab.wait_online(node)
    with EchoServer() as echo:
        response = lab.ssm.start_session(Target=node, DocumentName="AWS-StartPortForwardingSession",
                                         Parameters={"portNumber": [str(echo.port)], "localPortNumber": ["0"]})
        forwarder = forward.PortForwarder(
            response["SessionId"], response["TokenValue"], response["StreamUrl"], 0,
            resume=lambda: lab.ssm.resume_session(SessionId=response["SessionId"])["TokenValue"])
        forwarder.start()

        def drop_every(seconds: float) -> None:  # the lab's faults endpoint: no ssm-lab process to start
            request = urllib.request.Request(f"{lab.endpoint}/_lab/faults", method="POST",
                                             data=json.dumps({"drop_channel_every": seconds}).encode())
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

        drop_every(1)
        try:
            before = resumes(lab)
            with socket.create_connection(("127.0.0.1", forwarder.port), timeout=20) as connection:
                for round_number in range(12):  # about 3.5 s: across several 1-second drops
                    piece = f"round-{round_number:02d}-".encode() * 200
                    connection.sendall(piece)
                    received = bytearray()
                    while len(received) < len(piece):
                        chunk = connection.recv(65536)
                        assert chunk, f"the connection ended in round {round_number}: {forwarder.why()}"
                        received.extend(chunk)
                    assert bytes(received) == piece, f"round {round_number}"
                    threading.Event().wait(0.3)
            assert not forwarder.closed.is_set(), forwarder.why()
            assert resumes(lab) - before >= 2, "the channel dropped and resumed while the connection was used"
        finally:
            drop_every(0)
            forwarder.stop()
