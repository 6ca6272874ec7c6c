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
