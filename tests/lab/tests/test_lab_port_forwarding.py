"""Port forwarding sessions through the plugin shim's local listener to a real TCP server."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
from labhelpers import wait_until
from ssm_lab.harness.testing import EchoServer, echo_through

REMOTE_HOST_DOCUMENT = "AWS-StartPortForwardingSessionToRemoteHost"
LOCAL_DOCUMENT = "AWS-StartPortForwardingSession"


@pytest.fixture
def echo_port():
    with EchoServer() as server:
        yield server.port


def _start(lab, plugin, node: str, document: str, parameters: dict):
    response = lab.ssm.start_session(Target=node, DocumentName=document, Parameters=parameters)
    target = {"Target": node, "DocumentName": document, "Parameters": parameters}
    process = plugin(lab, response, target)
    match = process.wait_for(rf"Port (\d+) opened for sessionId {response['SessionId']}")
    return response["SessionId"], process, int(match.group(1))


def test_forward_to_remote_host_carries_bytes_both_ways(main_lab, plugin, echo_port):
    node = main_lab.ec2_ids[3]
    parameters = {"host": ["127.0.0.1"], "portNumber": [str(echo_port)], "localPortNumber": ["0"]}
    session_id, process, local_port = _start(main_lab, plugin, node, REMOTE_HOST_DOCUMENT, parameters)
    assert local_port != echo_port

    payload = os.urandom(100 * 1024)
    assert echo_through(local_port, payload) == payload
    second = os.urandom(4096)
    assert echo_through(local_port, second) == second
    assert process.output.count(f"Connection accepted for session [{session_id}]") == 1  # the first client only

    active = main_lab.ssm.describe_sessions(State="Active", Filters=[{"key": "SessionId", "value": session_id}])
    assert [s["DocumentName"] for s in active["Sessions"]] == [REMOTE_HOST_DOCUMENT]

    main_lab.ssm.terminate_session(SessionId=session_id)
    assert process.wait_exit() == 0
    assert f"Exiting session with sessionId: {session_id}." in process.output
    history = wait_until(lambda: main_lab.ssm.describe_sessions(
        State="History", Filters=[{"key": "SessionId", "value": session_id}])["Sessions"],
        what=f"{session_id} in the session history")
    assert history[0]["Status"] == "Terminated"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", local_port), timeout=5).close()


def test_forward_to_a_closed_port_closes_the_connection(main_lab, plugin):
    node = main_lab.ec2_ids[3]
    # A port held bound and never listened on: connecting to it is refused, and nothing else (the plugin's own
    # listener on port 0, another test) can take it meanwhile, as a port probed free and let go could be.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        parameters = {"portNumber": [str(closed.getsockname()[1])], "localPortNumber": ["0"]}
        session_id, process, local_port = _start(main_lab, plugin, node, LOCAL_DOCUMENT, parameters)

        # Longer than the lab waits for an agent's answer (15 s), so that a slow agent shows as the failure it is.
        with socket.create_connection(("127.0.0.1", local_port), timeout=30) as connection:
            with contextlib.suppress(ConnectionResetError):
                assert connection.recv(1024) == b""
        process.wait_for(r"Connection to destination port failed, check SSM Agent logs\.")

    main_lab.ssm.terminate_session(SessionId=session_id)
    assert process.wait_exit() == 0

