"""Session Manager prerequisites end to end, on an unprovisioned lab: a node goes Online exactly when it has
credentials and a network path, as judged from the lab's AWS state, and the lab names what is missing.

(test_reachability.py checks the rules themselves in-process; these tests drive a running lab over HTTP.)
The tests of this module build on each other in order: the NAT walk leaves the node with a profile and
without a route, which is where the endpoint walk starts."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from labhelpers import build_nat_path, trust_policy, wait_until

CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
ROLE = "lab-e2e-node"
VPC_CIDR = "10.42.0.0/16"
HTTPS_FROM_VPC = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": VPC_CIDR}]}
SERVICES = ("ssm", "ssmmessages", "ec2messages")


@pytest.fixture(scope="module")
def offline_lab(start_lab):
    with start_lab("offline-lab", "--nodes", "1") as lab:
        yield lab


@pytest.fixture(scope="module")
def node(offline_lab):
    [instance_id] = offline_lab.ec2_ids
    return instance_id


def _assert_target_not_connected(lab, node: str) -> None:
    with pytest.raises(ClientError) as raised:
        lab.ssm.start_session(Target=node)
    assert raised.value.response["Error"]["Code"] == "TargetNotConnected"
    assert lab.ssm.get_connection_status(Target=node)["Status"] == "notconnected"


def _wait_codes(lab, node: str, expected: set[str]) -> None:
    wait_until(lambda: lab.problem_codes(node) == expected,
               what=f"problems of {node} to be {sorted(expected)} (now {sorted(lab.problem_codes(node))})")


def _broken(lab, node: str, expected: set[str]) -> None:
    """The node leaves Online, is ConnectionLost, refuses sessions, and the lab names exactly ``expected``."""
    assert lab.wait_not_online(node) == "ConnectionLost"
    _wait_codes(lab, node, expected)
    _assert_target_not_connected(lab, node)


def _healed(lab, node: str) -> None:
    lab.wait_online(node)
    assert lab.problem_codes(node) == set()
    assert lab.ssm.get_connection_status(Target=node)["Status"] == "connected"


def _ensure_profile(lab, node: str) -> None:
    iam = lab.client("iam")
    try:
        iam.get_instance_profile(InstanceProfileName=ROLE)
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=trust_policy("ec2.amazonaws.com"))
        iam.attach_role_policy(RoleName=ROLE, PolicyArn=CORE_POLICY)
        iam.create_instance_profile(InstanceProfileName=ROLE)
        iam.add_role_to_instance_profile(InstanceProfileName=ROLE, RoleName=ROLE)
    associations = lab.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [node]}])["IamInstanceProfileAssociations"]
    if not any(a["State"] == "associated" for a in associations):
        lab.ec2.associate_iam_instance_profile(IamInstanceProfile={"Name": ROLE}, InstanceId=node)


def test_a_node_without_profile_or_path_is_not_registered(offline_lab, node):
    lab = offline_lab
    assert lab.ping_status(node) is None
    assert node not in {i["InstanceId"] for i in lab.ssm.describe_instance_information()["InstanceInformationList"]}
    _assert_target_not_connected(lab, node)

    status = json.loads(lab.cli("status", "--json").stdout)
    [listed] = [n for n in status["nodes"] if n["id"] == node]
    assert listed["ping_status"] == "NotRegistered"
    assert listed["agent_connected"] is True
    assert {p["code"] for p in listed["problems"]} == {"NO_INSTANCE_PROFILE", "NO_ROUTE_TO_INTERNET"}
    assert {p["prerequisite"] for p in listed["problems"]} == {"iam", "network"}


def test_profile_alone_is_not_enough_then_a_nat_path_brings_it_online(offline_lab, node):
    lab = offline_lab
    _ensure_profile(lab, node)
    assert lab.instance(node)["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{ROLE}")
    _wait_codes(lab, node, {"NO_ROUTE_TO_INTERNET"})
    assert lab.ping_status(node) is None
    _assert_target_not_connected(lab, node)

    path = build_nat_path(lab)
    _healed(lab, node)
    [listed] = [n for n in json.loads(lab.cli("status", "--json").stdout)["nodes"] if n["id"] == node]
    assert listed["ping_status"] == "Online"
    assert listed["problems"] == []
    assert lab.run_ok(node, "echo over-nat") == "over-nat\n"

    lab.ec2.delete_route(RouteTableId=path["route_table"], DestinationCidrBlock="0.0.0.0/0")
    _broken(lab, node, {"NO_ROUTE_TO_INTERNET"})


@pytest.fixture(scope="module")
def endpoint_group(offline_lab):
    ec2, vpc = offline_lab.ec2, offline_lab.network["vpc"]
    group = ec2.create_security_group(GroupName="lab-e2e-endpoints", Description="https from the VPC",
                                      VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[HTTPS_FROM_VPC])
    return group


def _create_endpoint(lab, service: str, group: str) -> str:
    endpoint = lab.ec2.create_vpc_endpoint(
        VpcId=lab.network["vpc"],
        ServiceName=f"com.amazonaws.{lab.region}.{service}",
        VpcEndpointType="Interface",
        SubnetIds=[p["subnet"] for p in lab.network["private"]],
        SecurityGroupIds=[group],
        PrivateDnsEnabled=True,
    )["VpcEndpoint"]
    assert endpoint["PrivateDnsEnabled"] is True
    return endpoint["VpcEndpointId"]


def test_interface_endpoints_path(offline_lab, node, endpoint_group):
    lab, ec2, vpc = offline_lab, offline_lab.ec2, offline_lab.network["vpc"]
    _ensure_profile(lab, node)
    table = lab.network["private"][0]["route_table"]
    routes = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Routes"]
    assert "0.0.0.0/0" not in {r.get("DestinationCidrBlock") for r in routes}

    endpoints = {service: _create_endpoint(lab, service, endpoint_group) for service in SERVICES}
    _healed(lab, node)
    assert lab.run_ok(node, "echo over-endpoints") == "over-endpoints\n"

    # One endpoint gone, then back.
    ec2.delete_vpc_endpoints(VpcEndpointIds=[endpoints["ssmmessages"]])
    _broken(lab, node, {"ENDPOINT_MISSING"})
    endpoints["ssmmessages"] = _create_endpoint(lab, "ssmmessages", endpoint_group)
    _healed(lab, node)

    # Private DNS off on one endpoint, then on.
    ec2.modify_vpc_endpoint(VpcEndpointId=endpoints["ssm"], PrivateDnsEnabled=False)
    _broken(lab, node, {"ENDPOINT_PRIVATE_DNS_OFF"})
    ec2.modify_vpc_endpoint(VpcEndpointId=endpoints["ssm"], PrivateDnsEnabled=True)
    _healed(lab, node)

    # The endpoints' security group stops admitting HTTPS, then admits it again.
    ec2.revoke_security_group_ingress(GroupId=endpoint_group, IpPermissions=[HTTPS_FROM_VPC])
    _broken(lab, node, {"ENDPOINT_SG_NO_443"})
    ec2.authorize_security_group_ingress(GroupId=endpoint_group, IpPermissions=[HTTPS_FROM_VPC])
    _healed(lab, node)

    # VPC DNS hostnames off, then on.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": False})
    _broken(lab, node, {"VPC_DNS_HOSTNAMES_OFF"})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    _healed(lab, node)

    # And the CLI's status names the same problem while it is there.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": False})
    _broken(lab, node, {"VPC_DNS_SUPPORT_OFF"})
    [listed] = [n for n in json.loads(lab.cli("status", "--json").stdout)["nodes"] if n["id"] == node]
    assert listed["ping_status"] == "ConnectionLost"
    assert [p["code"] for p in listed["problems"]] == ["VPC_DNS_SUPPORT_OFF"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    _healed(lab, node)
