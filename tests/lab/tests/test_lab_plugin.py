"""Every session type the lab offers, as the session-manager-plugin sees it: the lab's stand-in in make test, AWS's own
plugin in make interop (SESSION_MANAGER_PLUGIN=path), with the same assertions: the lines it prints, its exit
status, the bytes through port forwards in both port modes, and the end when a session is terminated."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import urllib.request

import pytest
from labhelpers import wait_until
from ssm_lab.harness import testing

# AWS's plugin moves 10 MiB through each forward in make interop; the stand-in, run on every make test, 1 MiB.
INTEROP = bool(os.environ.get(testing.INTEROP_PLUGIN))
FORWARD_BYTES = (10 if INTEROP else 1) * 2**20


@pytest.fixture(scope="module")
def lab(start_lab):
    with start_lab("plugin-lab", "--nodes", "1", "--provisioned") as lab:
        yield lab


def set_faults(lab, **values) -> None:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/faults", method="POST", data=json.dumps(values).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def history(lab, session_id: str) -> dict:
    found = lab.ssm.describe_sessions(State="History", Filters=[{"key": "SessionId", "value": session_id}])
    return (found["Sessions"] or [{}])[0]


def test_the_plugin_is_the_one_asked_for():
    if INTEROP:
        assert testing.plugin_path() == os.environ[testing.INTEROP_PLUGIN]
    else:
        assert testing.plugin_path().endswith("ssm-lab-plugin")


def test_a_shell_command_its_output_and_the_end(lab, plugin):
    node = lab.ec2_ids[0]
    response = lab.ssm.start_session(Target=node)
    process = plugin(lab, response, {"Target": node})
    process.wait_for(f"Starting session with SessionId: {response['SessionId']}")
    process.write("echo interop-$((6*7)) $(id -un)\nexit\n")
    process.wait_for(r"interop-42 ssm-user")
    assert process.wait_exit() == 0
    assert f"\r\n\r\nExiting session with sessionId: {response['SessionId']}.\r\n" in process.output
    assert wait_until(lambda: history(lab, response["SessionId"]).get("Status") == "Terminated",
                      what="the session in the history")


def test_a_non_interactive_command(lab, plugin):
    node = lab.ec2_ids[0]
    response = lab.ssm.start_session(Target=node, DocumentName="AWS-StartNonInteractiveCommand",
                                     Parameters={"command": ["echo one-$((1)); echo two-$((1+1))"]})
    process = plugin(lab, response, {"Target": node})
    process.wait_for(r"two-2")
    assert process.wait_exit() == 0
    assert "one-1" in process.output and "Exiting session with sessionId" in process.output


def test_terminating_a_live_session_ends_the_plugin(lab, plugin):
    node = lab.ec2_ids[0]
    response = lab.ssm.start_session(Target=node)
    process = plugin(lab, response, {"Target": node})
    process.write("echo live-$((2+3))\n")
    process.wait_for(r"live-5")
    lab.ssm.terminate_session(SessionId=response["SessionId"])
    assert process.wait_exit() == 0
    assert f"Exiting session with sessionId: {response['SessionId']}." in process.output


def _forward(lab, plugin, document: str, parameters: dict, connections: int) -> None:
    node = lab.ec2_ids[0]
    with testing.EchoServer() as echo:
        parameters = {"portNumber": [str(echo.port)], **parameters}
        response = lab.ssm.start_session(Target=node, DocumentName=document, Parameters=parameters)
        process = plugin(lab, response, {"Target": node})
        port = int(process.wait_for(r"Port (\d+) opened for sessionId").group(1))
        payload = os.urandom(FORWARD_BYTES)
        for _round in range(connections):
            echoed = testing.echo_through(port, payload, timeout=120)
            assert (len(echoed), hashlib.sha256(echoed).hexdigest()) == (
                len(payload), hashlib.sha256(payload).hexdigest()), f"round {_round + 1}; the plugin said:\n{process.output}"
        os.killpg(process.process.pid, signal.SIGINT)
        assert process.wait_exit() == 0
        assert "Terminate signal received, exiting." in process.output
        assert wait_until(lambda: history(lab, response["SessionId"]).get("Status") == "Terminated",
                          what="the port session in the history")


@pytest.mark.parametrize("mode", ["multiplexed", "basic"])
@pytest.mark.parametrize("document", ["AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost"])
def test_port_forwarding_moves_bytes_intact(lab, plugin, document, mode):
    """Both documents, in the multiplexed mode (a current agent) and the basic mode (an agent of 3.0.161.0)."""
    set_faults(lab, handshake_agent_version="" if mode == "multiplexed" else "3.0.161.0")
    try:
        parameters = {"host": ["127.0.0.1"]} if document.endswith("RemoteHost") else {}
        parameters["localPortNumber"] = [str(_free_port())]
        _forward(lab, plugin, document, parameters, connections=2)
    finally:
        set_faults(lab, handshake_agent_version="")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
