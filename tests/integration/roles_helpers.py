"""Helpers for the role tests: run the prerequisites playbook against a lab, read ping status."""

import json
import os
import time

from ansible_cli import run

PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "prerequisites.yml")


def provision(lab, check=True, check_mode=False, tags=None, **extra):
    """Run the prerequisites playbook with ``extra`` as extra vars (``tags``: only the roles' tasks so tagged, such
    as "preflight"); return (output, localhost's recap)."""
    argv = ["ansible-playbook", "-i", "localhost,", PLAYBOOK, "-e", json.dumps(extra)]
    if check_mode:
        argv.append("--check")
    if tags:
        argv += ["--tags", tags]
    output, recap = run(lab, *argv, check=check)
    return output, recap.get("localhost", {})


def ping_status(lab) -> dict:
    infos = lab.client("ssm").describe_instance_information()["InstanceInformationList"]
    seen = {i["InstanceId"]: i["PingStatus"] for i in infos}
    return {node: seen.get(node, "NotRegistered") for node in lab.network["nodes"]}


def wait_for(lab, wanted: str, nodes=None, timeout: float = 30.0) -> dict:
    """Wait until each of ``nodes`` (default: all) has ping status ``wanted`` (or is not Online, for
    wanted='offline'); fail naming the ones that do not."""
    nodes = nodes or lab.network["nodes"]
    deadline = time.monotonic() + timeout
    while True:
        status = ping_status(lab)
        pending = [n for n in nodes if (status[n] == "Online") != (wanted == "Online")]
        if not pending:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s these nodes are not {wanted}: {pending} ({status})")
        time.sleep(0.5)


def finished_command(lab, node: str, script: str, timeout: float = 60.0) -> dict:
    """The invocation of ``script`` on ``node`` by Run Command (AWS-RunShellScript), once it has finished, whatever
    its status; AssertionError when it has not within ``timeout`` seconds."""
    ssm = lab.client("ssm")
    command = ssm.send_command(InstanceIds=[node], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": [script]})["Command"]["CommandId"]

    def finished():
        try:
            invocation = ssm.get_command_invocation(CommandId=command, InstanceId=node)
        except ssm.exceptions.InvocationDoesNotExist:
            return None
        return invocation if invocation["Status"] not in ("Pending", "InProgress", "Delayed") else None

    deadline = time.monotonic() + timeout
    while (invocation := finished()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"Run Command on {node} did not finish within {timeout:g} s: {script}")
        time.sleep(0.2)
    return invocation


def run_command(lab, node: str, script: str, timeout: float = 60.0) -> str:
    """The output of ``script`` run as root on ``node`` by Run Command, which must succeed: how the tests look at a
    node's files and accounts out of band, for a tenth of an ad-hoc ``ansible`` run's CPU (no controller start-up,
    inventory or connection). Output past 24,000 characters is cut, as on AWS."""
    invocation = finished_command(lab, node, script, timeout)
    assert invocation["Status"] == "Success", (script, invocation)
    return invocation["StandardOutputContent"]
