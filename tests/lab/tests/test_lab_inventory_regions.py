"""A second region (``ssm-lab up --region-nodes us-west-2=1``): its own network and nodes, and SSM actions that
answer for the region a request is signed for, as AWS does."""

from __future__ import annotations

import subprocess

import pytest
from botocore.exceptions import ClientError
from ssm_lab.harness import testing

WEST = "us-west-2"


@pytest.fixture(scope="module")
def two_regions(start_lab):
    with start_lab("two-regions", "--nodes", "1", "--hybrid", "1", "--provisioned",
                   "--region-nodes", f"{WEST}=1") as lab:
        yield lab


def _west_id(lab) -> str:
    (node_id,) = lab.network["regions"][WEST]["nodes"]
    return node_id


def _listed(lab, region) -> set[str]:
    rows = lab.client("ssm", region=region).describe_instance_information()["InstanceInformationList"]
    return {r["InstanceId"] for r in rows}


def test_each_region_lists_its_own_nodes(two_regions):
    west = _west_id(two_regions)
    east = set(two_regions.node_ids) - {west}
    assert _listed(two_regions, "us-east-1") == east
    assert _listed(two_regions, WEST) == {west}
    assert _listed(two_regions, "eu-west-1") == set()
    inventory = two_regions.client("ssm", region=WEST).get_inventory()["Entities"]
    assert [e["Id"] for e in inventory] == [west]


def test_the_second_region_has_its_own_network_and_the_node_is_online_there(two_regions):
    west = _west_id(two_regions)
    network = two_regions.network["regions"][WEST]
    ec2 = two_regions.client("ec2", region=WEST)
    instance = ec2.describe_instances(InstanceIds=[west])["Reservations"][0]["Instances"][0]
    assert instance["VpcId"] == network["vpc"]
    assert instance["Placement"]["AvailabilityZone"].startswith(WEST)
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["Name"] == f"lab-{WEST}-node-1"
    with pytest.raises(ClientError):
        two_regions.ec2.describe_instances(InstanceIds=[west])  # not an instance of us-east-1
    info = two_regions.client("ssm", region=WEST).describe_instance_information()["InstanceInformationList"][0]
    assert info["PingStatus"] == "Online"
    assert info["ComputerName"] == f"ip-{instance['PrivateIpAddress'].replace('.', '-')}.{WEST}.compute.internal"


def test_sessions_and_commands_go_through_the_nodes_region(two_regions):
    west = _west_id(two_regions)
    east_ssm, west_ssm = two_regions.client("ssm"), two_regions.client("ssm", region=WEST)
    assert east_ssm.get_connection_status(Target=west)["Status"] == "notconnected"
    assert west_ssm.get_connection_status(Target=west)["Status"] == "connected"
    with pytest.raises(ClientError) as raised:
        east_ssm.start_session(Target=west)
    assert raised.value.response["Error"]["Code"] == "TargetNotConnected"
    session = west_ssm.start_session(Target=west)
    west_ssm.terminate_session(SessionId=session["SessionId"])
    with pytest.raises(ClientError) as raised:
        east_ssm.send_command(InstanceIds=[west], DocumentName="AWS-RunShellScript",
                              Parameters={"commands": ["true"]})
    assert raised.value.response["Error"]["Code"] == "InvalidInstanceId"
    command = west_ssm.send_command(InstanceIds=[west], DocumentName="AWS-RunShellScript",
                                    Parameters={"commands": ["hostname"]})["Command"]["CommandId"]
    invocation = testing.wait_until(
        lambda: (lambda i: i if i["Status"] not in ("Pending", "InProgress", "Delayed") else None)(
            west_ssm.get_command_invocation(CommandId=command, InstanceId=west)), 30, what="the command")
    assert invocation["Status"] == "Success" and f"{WEST}.compute.internal" in invocation["StandardOutputContent"]


def test_hybrid_node_tags_belong_to_their_region(two_regions):
    (hybrid,) = [n for n in two_regions.node_ids if n.startswith("mi-")]
    with pytest.raises(ClientError) as raised:
        two_regions.client("ssm", region=WEST).list_tags_for_resource(ResourceType="ManagedInstance",
                                                                      ResourceId=hybrid)
    assert raised.value.response["Error"]["Code"] == "InvalidResourceId"
    tags = two_regions.ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=hybrid)["TagList"]
    assert {t["Key"] for t in tags} == {"Name", "Env"}


@pytest.mark.parametrize("bad", ["us-east-1=1", "us-west-2", "us-west-2=0", "=2"])
def test_region_nodes_needs_another_region_and_a_count(bad, tmp_path):
    result = subprocess.run([testing.SSM_LAB, "--state-dir", str(tmp_path), "up", "--region-nodes", bad],
                            capture_output=True, text=True, env=testing.clean_environ(), timeout=60, check=False)
    assert result.returncode == 2
    assert "expected REGION=N with a region other than us-east-1" in result.stderr
