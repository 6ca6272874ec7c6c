"""Port forwarding sessions to a real TCP server: through the plugin shim's local listener, and through the
collection's native forwarder (ssm_tunnel's transport native): both documents, both port modes, many connections over
one session, and the failures a forward can meet (an expired token, a session terminated under it, a session that
is no port forward)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import urllib.request

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



# --- the collection's native port forwarding (plugins/plugin_utils/_port_forward.py, ssm_tunnel's transport native) ---

def _forwarder_module():
    from ssm_lab.client.plugin import client_module  # noqa: F401  (loads the codec and the client under their names)
    from ssm_lab.codec import load_collection_module

    return load_collection_module("_port_forward.py", "bastionless_port_forward")


def _set_faults(lab, **values) -> None:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/faults", method="POST", data=json.dumps(values).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _native(lab, node: str, document: str, parameters: dict, **kwargs):
    forward = _forwarder_module()
    response = lab.ssm.start_session(Target=node, DocumentName=document, Parameters=parameters)
    lines = []
    forwarder = forward.PortForwarder(
        response["SessionId"], response["TokenValue"], response["StreamUrl"], 0, log=lines.append,
        resume=lambda: lab.ssm.resume_session(SessionId=response["SessionId"])["TokenValue"], **kwargs)
    return forward, forwarder, response["SessionId"], lines


def test_native_forwarding_serves_many_connections_at_once_over_one_session(main_lab, echo_port):
    node = main_lab.ec2_ids[3]
    parameters = {"host": ["127.0.0.1"], "portNumber": [str(echo_port)], "localPortNumber": ["0"]}
    _forward, forwarder, session_id, lines = _native(main_lab, node, REMOTE_HOST_DOCUMENT, parameters)
    forwarder.start()
    try:
        assert forwarder.mode == "multiplexed", lines
        payloads = [os.urandom(64 * 1024 + n) for n in range(8)]
        echoed = [None] * len(payloads)

        def one(index):
            echoed[index] = echo_through(forwarder.port, payloads[index], timeout=60)

        workers = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(90)
        assert [hashlib.sha256(e or b"").hexdigest() for e in echoed] == [
            hashlib.sha256(p).hexdigest() for p in payloads]
        assert forwarder.accepted == len(payloads)
        active = main_lab.ssm.describe_sessions(State="Active", Filters=[{"key": "SessionId", "value": session_id}])
        assert [s["DocumentName"] for s in active["Sessions"]] == [REMOTE_HOST_DOCUMENT]  # all eight over this one
    finally:
        forwarder.stop()
    assert forwarder.closed.is_set() and forwarder.why() == "stopped"
    history = wait_until(lambda: main_lab.ssm.describe_sessions(
        State="History", Filters=[{"key": "SessionId", "value": session_id}])["Sessions"],
        what=f"{session_id} in the session history")
    assert history[0]["Status"] == "Terminated"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forwarder.port), timeout=5).close()


def test_native_forwarding_to_the_node_in_the_basic_mode_of_older_agents(main_lab, echo_port):
    _set_faults(main_lab, handshake_agent_version="3.0.161.0")
    try:
        parameters = {"portNumber": [str(echo_port)], "localPortNumber": ["0"]}
        _forward, forwarder, _session_id, lines = _native(main_lab, main_lab.ec2_ids[3], LOCAL_DOCUMENT, parameters)
        forwarder.start()
    finally:
        _set_faults(main_lab, handshake_agent_version="")
    try:
        assert forwarder.mode == "basic", lines
        for size in (200 * 1024, 3000):  # one connection after the other, over the same session
            payload = os.urandom(size)
            assert echo_through(forwarder.port, payload, timeout=60) == payload
    finally:
        forwarder.stop()


def test_native_forwarding_ends_with_the_reason_when_the_session_is_terminated(main_lab, echo_port):
    node = main_lab.ec2_ids[3]
    parameters = {"portNumber": [str(echo_port)], "localPortNumber": ["0"]}
    _forward, forwarder, session_id, _lines = _native(main_lab, node, LOCAL_DOCUMENT, parameters)
    forwarder.start()
    with socket.create_connection(("127.0.0.1", forwarder.port), timeout=10) as connection:
        connection.sendall(b"ping")
        assert connection.recv(16) == b"ping"
        main_lab.ssm.terminate_session(SessionId=session_id)  # in the middle of the connection
        assert forwarder.closed.wait(15)
        assert forwarder.why().startswith("the service closed the session"), forwarder.why()
        forwarder.stop()
        connection.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert connection.recv(16) == b""


def test_native_forwarding_names_an_expired_token_and_a_session_that_is_no_port_forward(main_lab, echo_port):
    node = main_lab.ec2_ids[3]
    parameters = {"portNumber": [str(echo_port)], "localPortNumber": ["0"]}
    forward, forwarder, session_id, _lines = _native(main_lab, node, LOCAL_DOCUMENT, parameters)
    main_lab.ssm.resume_session(SessionId=session_id)  # a new token: the one the forwarder holds has expired
    with pytest.raises(forward.PortForwardError, match="did not open: .*InvalidToken"):
        forwarder.start(timeout=15)
    main_lab.ssm.terminate_session(SessionId=session_id)

    response = main_lab.ssm.start_session(Target=node)  # a shell session
    shell = forward.PortForwarder(response["SessionId"], response["TokenValue"], response["StreamUrl"], 0)
    with pytest.raises(forward.PortForwardError, match="is a Standard_Stream session, not port forwarding"):
        shell.start(timeout=15)
    main_lab.ssm.terminate_session(SessionId=response["SessionId"])
