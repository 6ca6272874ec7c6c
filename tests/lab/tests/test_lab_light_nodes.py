"""Light nodes (``ssm-lab up --light-nodes N``): EC2 nodes registered and Online, each with an agent of its own,
that all run in one shared sandbox, so that a fleet of 1,000 fits on a small machine (tests/benchmarks/fleet.py).
Run Command by tag, a session's shell and an association work on each, and each sees its own name and id."""

from __future__ import annotations

import os
import secrets

import pytest
from labhelpers import wait_until

LIGHT = 4
BY_TAG = [{"Key": "tag:ssm-lab-kind", "Values": ["light"]}]


@pytest.fixture(scope="module")
def light_lab(start_lab):
    with start_lab("light-lab", "--nodes", "1", "--light-nodes", str(LIGHT), "--provisioned") as lab:
        lab.wait_all_online()
        yield lab


def _light(lab) -> dict:
    """The light nodes, instance id -> host name."""
    return {n["id"]: n["hostname"] for n in lab.admin("nodes")["nodes"] if n["light"]}


def _init_processes(lab, sandbox: str) -> int:
    """The nodes' inits (PID 1 of each sandbox) whose root is the sandbox ``sandbox`` under the lab's nodes/."""
    root = os.path.join(lab.state_dir, "nodes", sandbox, "root").encode()
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[1] == b"-c" and argv[3] == root:  # python -c NODE_INIT ROOT HOSTNAME ...
            count += 1
    return count


def test_light_nodes_are_online_ec2_nodes_that_share_one_sandbox(light_lab):
    light = _light(light_lab)
    assert len(light) == LIGHT
    rows = light_lab.ssm.describe_instance_information(
        Filters=[{"Key": "tag:ssm-lab-kind", "Values": ["light"]}])["InstanceInformationList"]
    assert {r["InstanceId"]: r["PingStatus"] for r in rows} == dict.fromkeys(light, "Online")
    assert {r["ComputerName"] for r in rows} == set(light.values())
    tags = {t["Key"]: t["Value"] for t in light_lab.instance(next(iter(light)))["Tags"]}
    assert tags == {"Name": "lab-light", "ssm-lab": "node", "ssm-lab-kind": "light"}
    command = light_lab.send(None, ["echo ok"], Targets=BY_TAG)
    assert light_lab.wait_command(command)["Status"] == "Success"
    nodes = sorted(os.listdir(os.path.join(light_lab.state_dir, "nodes")))
    full = [n for n in light_lab.ec2_ids if n not in light]
    assert nodes == sorted(["light", *full])  # one sandbox for the light nodes, one for the full node
    assert _init_processes(light_lab, "light") == 1


def test_run_command_by_tag_runs_on_each_light_node_as_itself(light_lab):
    light = _light(light_lab)
    marker = f"/tmp/light-{secrets.token_hex(4)}"
    command = light_lab.send(None, [f'echo "$(hostname) $(uname -n) $SSM_LAB_INSTANCE_ID $SSM_LAB_HOSTNAME"',
                                    f"touch {marker}"], Targets=BY_TAG)
    assert light_lab.wait_command(command)["Status"] == "Success"
    for node_id, hostname in light.items():
        invocation = light_lab.ssm.get_command_invocation(CommandId=command, InstanceId=node_id)
        assert invocation["StandardOutputContent"].split() == [hostname, hostname, node_id, hostname]
    # The files are shared by the light nodes (one overlay) and kept from the full node (its own).
    some = next(iter(light))
    assert light_lab.run_ok(some, f"test -e {marker} && echo shared").strip() == "shared"
    (full,) = [n for n in light_lab.ec2_ids if n not in light]
    assert light_lab.run(full, f"test -e {marker}")["ResponseCode"] == 1


def test_a_shell_session_on_a_light_node_is_that_node(light_lab, shell):
    node_id, hostname = sorted(_light(light_lab).items())[-1]
    response, process = shell(light_lab, node_id)
    process.write('echo "name=$(hostname) id=$SSM_LAB_INSTANCE_ID user=$(id -un)"\nexit\n')
    process.wait_for(rf"name={hostname} id={node_id} user=ssm-user")
    process.wait_for(rf"Exiting session with sessionId: {response['SessionId']}\.")


def test_an_association_by_tag_runs_on_every_light_node(light_lab):
    light = _light(light_lab)
    created = light_lab.ssm.create_association(
        Name="AWS-RunShellScript", AssociationName=f"light-{secrets.token_hex(3)}",
        Parameters={"commands": ["echo $SSM_LAB_INSTANCE_ID"]}, Targets=BY_TAG)["AssociationDescription"]
    association_id = created["AssociationId"]
    try:
        def ended():
            executions = light_lab.ssm.describe_association_executions(
                AssociationId=association_id)["AssociationExecutions"]
            return executions[0] if executions and executions[0]["Status"] not in ("Pending", "InProgress") else None

        execution = wait_until(ended, 30, what=f"the first run of association {association_id}")
        assert execution["Status"] == "Success"
        rows = light_lab.ssm.describe_association_execution_targets(
            AssociationId=association_id, ExecutionId=execution["ExecutionId"])["AssociationExecutionTargets"]
        assert {r["ResourceId"]: r["Status"] for r in rows} == dict.fromkeys(light, "Success")
        for row in rows:
            invocation = light_lab.ssm.get_command_invocation(
                CommandId=row["OutputSource"]["OutputSourceId"], InstanceId=row["ResourceId"])
            assert invocation["StandardOutputContent"].strip() == row["ResourceId"]
    finally:
        light_lab.ssm.delete_association(AssociationId=association_id)
