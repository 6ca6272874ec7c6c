"""Shell sessions end to end: StartSession with boto3, then the plugin shim as amazon.aws.aws_ssm runs it."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from labhelpers import wait_until


def _history(lab, session_id: str) -> dict | None:
    sessions = lab.ssm.describe_sessions(State="History",
                                         Filters=[{"key": "SessionId", "value": session_id}])["Sessions"]
    return sessions[0] if sessions else None


def test_shell_session_runs_a_command_and_exits(main_lab, shell):
    node = main_lab.ec2_ids[0]
    response, process = shell(main_lab, node)
    session_id = response["SessionId"]
    assert process.output.count(f"Starting session with SessionId: {session_id}") == 1

    process.write("echo marker-$((40+2))\nexit\n")
    process.wait_for(r"marker-42")
    process.wait_for(rf"Exiting session with sessionId: {session_id}\.")
    assert process.wait_exit() == 0

    ended = wait_until(lambda: _history(main_lab, session_id), what=f"{session_id} in the session history")
    assert ended["Status"] == "Terminated"
    assert ended["Target"] == node
    assert ended["Owner"].startswith("arn:aws:")
    assert ended["Owner"] == main_lab.client("sts").get_caller_identity()["Arn"]
    assert "EndDate" in ended
    active = main_lab.ssm.describe_sessions(State="Active")["Sessions"]
    assert session_id not in {s["SessionId"] for s in active}


def test_terminate_session_ends_the_plugin(main_lab, shell):
    node = main_lab.ec2_ids[1]
    response, process = shell(main_lab, node)
    session_id = response["SessionId"]

    def active():
        return main_lab.ssm.describe_sessions(State="Active",
                                              Filters=[{"key": "SessionId", "value": session_id}])["Sessions"]

    # Listed as soon as it starts ("Connecting"); "Connected" once the plugin's data channel is open, which may be a
    # moment after the plugin prints its first line.
    assert [s["SessionId"] for s in active()] == [session_id]
    wait_until(lambda: active()[0]["Status"] == "Connected", what=f"{session_id} to be Connected")

    assert main_lab.ssm.terminate_session(SessionId=session_id)["SessionId"] == session_id
    assert process.wait_exit() == 0
    assert f"Exiting session with sessionId: {session_id}." in process.output
    ended = wait_until(lambda: _history(main_lab, session_id), what=f"{session_id} in the session history")
    assert ended["Status"] == "Terminated"


def test_start_session_to_unknown_target(main_lab):
    with pytest.raises(ClientError) as raised:
        main_lab.ssm.start_session(Target="i-0123456789abcdef0")
    assert raised.value.response["Error"]["Code"] == "TargetNotConnected"


def test_a_job_detached_with_setsid_outlives_its_session(main_lab, shell):
    # As on EC2: a session's shell ends with the session, but what it detached (setsid, Ansible's async jobs) runs
    # on in the node until it ends or the node reboots. The node's processes share one PID namespace, so a later
    # command sees the job, and the machine's processes stay out of sight.
    node = main_lab.ec2_ids[2]
    response, process = shell(main_lab, node)
    process.write("setsid sleep 613 </dev/null >/dev/null 2>&1 & echo detached-$((6*7))\n")
    process.wait_for(r"detached-42")
    main_lab.ssm.terminate_session(SessionId=response["SessionId"])
    assert process.wait_exit() == 0
    wait_until(lambda: _history(main_lab, response["SessionId"]), what="the session to end")
    listing = main_lab.run_ok(node, "ps -eo pid,args")
    assert [line.split(None, 1)[1] for line in listing.splitlines() if line.endswith("sleep 613")] == ["sleep 613"]
    assert "ssm_lab" not in listing  # the agent host and control plane are the machine's, not the node's
    assert main_lab.run_ok(node, "pkill -x -f 'sleep 613'; echo rc=$?") == "rc=0\n"
