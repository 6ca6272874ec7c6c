"""bastionless.ssm.vpc_endpoints (with instance_role) against the lab: each mode brings offline nodes Online,
breaking the path takes them offline and a rerun brings them back, and bad input fails cleanly."""

import json

import pytest
from ansible_cli import run_cases
from roles_helpers import ping_status, provision, wait_for
from ssm_lab.harness.testing import running_lab


def _endpoints(lab, live=True):
    found = lab.client("ec2").describe_vpc_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [lab.network["vpc"]]}])["VpcEndpoints"]
    return {e["ServiceName"].rsplit(".", 1)[-1]: e for e in found if not live or e["State"] == "available"}


def _endpoint_group(lab):
    groups = lab.client("ec2").describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [lab.network["vpc"]]},
                 {"Name": "group-name", "Values": ["bastionless-ssm-endpoints"]}])["SecurityGroups"]
    return groups[0] if groups else None


def _profiles(lab):
    return [p["InstanceProfileName"] for p in lab.client("iam").list_instance_profiles()["InstanceProfiles"]]


@pytest.fixture(scope="module")
def endpoints_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2") as lab:
        yield lab


@pytest.fixture(scope="module")
def nat_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--nat") as lab:
        yield lab


class TestEndpointsMode:
    def test_check_mode_on_a_fresh_lab_predicts_and_changes_nothing(self, endpoints_lab):
        output, recap = provision(endpoints_lab, check_mode=True, vpc_endpoints_mode="endpoints")
        assert recap["failed"] == 0 and recap["changed"] >= 3, output
        assert "Would create the instance profile bastionless-ssm-instance and attach it to" in output
        assert not _endpoints(endpoints_lab, live=False)
        assert _endpoint_group(endpoints_lab) is None
        assert _profiles(endpoints_lab) == []
        assert set(ping_status(endpoints_lab).values()) == {"NotRegistered"}

    def test_the_roles_bring_every_node_online(self, endpoints_lab):
        output, recap = provision(endpoints_lab, vpc_endpoints_mode="endpoints")
        assert recap["failed"] == 0, output
        wait_for(endpoints_lab, "Online")
        endpoints = _endpoints(endpoints_lab)
        assert sorted(endpoints) == ["ec2messages", "ssm", "ssmmessages"]
        assert all(e["PrivateDnsEnabled"] for e in endpoints.values())
        for endpoint in endpoints.values():  # the account's own principals only, not AWS's default full access
            [statement] = json.loads(endpoint["PolicyDocument"])["Statement"]
            assert statement["Condition"] == {"StringEquals": {"aws:PrincipalAccount": "123456789012"}}, endpoint
        assert "Monthly cost estimate, us-east-1" in output
        assert "endpoints $   43.90" in output

    # From here on the instance role is in place: only the network role runs. A second run of both roles in this
    # mode is the molecule scenario's idempotence step (extensions/molecule/vpc_endpoints, make molecule); in make test,
    # test_site.py's second site.yml run, which must change nothing.
    def test_a_broken_path_takes_the_nodes_offline_and_a_rerun_repairs_each_break(self, endpoints_lab):
        """Three breaks at once (an endpoint deleted, private DNS off on another, the 443 rule revoked): the nodes
        go offline, and one rerun repairs all three."""
        ec2 = endpoints_lab.client("ec2")
        endpoints = _endpoints(endpoints_lab)
        ec2.delete_vpc_endpoints(VpcEndpointIds=[endpoints["ssmmessages"]["VpcEndpointId"]])
        ec2.modify_vpc_endpoint(VpcEndpointId=endpoints["ssm"]["VpcEndpointId"], PrivateDnsEnabled=False)
        group = _endpoint_group(endpoints_lab)
        ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
        wait_for(endpoints_lab, "offline")
        output, recap = provision(endpoints_lab, with_instance_role=False, vpc_endpoints_mode="endpoints")
        assert recap["failed"] == 0 and recap["changed"] >= 2, output
        repaired = _endpoints(endpoints_lab)
        assert sorted(repaired) == ["ec2messages", "ssm", "ssmmessages"]
        assert all(e["PrivateDnsEnabled"] for e in repaired.values())
        rules = _endpoint_group(endpoints_lab)["IpPermissions"]
        assert any(r.get("FromPort") == 443 and r.get("ToPort") == 443 for r in rules), rules
        wait_for(endpoints_lab, "Online")

    def test_dns_hostnames_off_fails_without_leave_and_is_fixed_with_it(self, endpoints_lab):
        ec2 = endpoints_lab.client("ec2")
        ec2.modify_vpc_attribute(VpcId=endpoints_lab.network["vpc"], EnableDnsHostnames={"Value": False})
        wait_for(endpoints_lab, "offline")
        before = _endpoints(endpoints_lab)
        output, recap = provision(endpoints_lab, check=False, with_instance_role=False, vpc_endpoints_mode="endpoints")
        assert recap["failed"] == 1 and recap["changed"] == 0, output
        assert "has enableDnsHostnames off" in " ".join(output.split())
        assert "Set vpc_endpoints_fix_vpc_dns to true" in " ".join(output.split())
        assert _endpoints(endpoints_lab) == before  # the preflight failed: nothing was touched
        output, recap = provision(endpoints_lab, with_instance_role=False, vpc_endpoints_mode="endpoints",
                                  vpc_endpoints_fix_vpc_dns=True)
        assert recap["failed"] == 0 and recap["changed"] >= 1, output
        wait_for(endpoints_lab, "Online")


class TestNatMode:
    def test_check_mode_changes_nothing(self, nat_lab):
        output, recap = provision(nat_lab, check_mode=True, vpc_endpoints_mode="nat")
        assert recap["failed"] == 0 and recap["changed"] >= 1, output
        assert _profiles(nat_lab) == []

    def test_nat_mode_reports_the_path_and_creates_no_endpoint(self, nat_lab):
        output, recap = provision(nat_lab, vpc_endpoints_mode="nat")
        assert recap["failed"] == 0, output
        assert f"routes 0.0.0.0/0 to {nat_lab.network['nat_gateway']} (available)" in output
        assert "Chosen: nat; it adds $0.00 a month" in output
        wait_for(nat_lab, "Online")
        assert not _endpoints(nat_lab, live=False)
        output, recap = provision(nat_lab, with_instance_role=False, vpc_endpoints_mode="nat")
        assert recap["changed"] == 0, output

    def test_both_mode_adds_the_endpoints_beside_the_nat(self, nat_lab):
        output, recap = provision(nat_lab, with_instance_role=False, vpc_endpoints_mode="both")
        assert recap["failed"] == 0 and recap["changed"] >= 1, output
        assert sorted(_endpoints(nat_lab)) == ["ec2messages", "ssm", "ssmmessages"]
        wait_for(nat_lab, "Online")
        output, recap = provision(nat_lab, with_instance_role=False, vpc_endpoints_mode="both")
        assert recap["changed"] == 0, output

    def test_nat_mode_fails_clearly_when_a_subnet_has_no_nat_route(self, nat_lab):
        ec2 = nat_lab.client("ec2")
        table = nat_lab.network["private"][1]["route_table"]
        ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")
        try:
            output, recap = provision(nat_lab, check=False, with_instance_role=False, vpc_endpoints_mode="nat")
            assert recap["failed"] == 1, output
            subnet = nat_lab.network["private"][1]["subnet"]
            assert f"vpc_endpoints_mode is nat, but {subnet} has no 0.0.0.0/0 route to a NAT gateway in {table}" in output
        finally:
            ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0",
                             NatGatewayId=nat_lab.network["nat_gateway"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1") as lab:
        yield lab


class TestBadInput:
    """Each bad input: one clear error naming the input, and nothing made (no group, no endpoint, no role)."""

    def test_each_bad_input_fails_alone_and_nothing_is_made(self, lab, tmp_path):
        ec2 = lab.client("ec2")
        first = lab.network["private"][0]["subnet"]
        other = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
        foreign = ec2.create_subnet(VpcId=other, CidrBlock="10.99.1.0/24",
                                    AvailabilityZone="us-east-1c")["Subnet"]["SubnetId"]
        twin = ec2.create_subnet(VpcId=lab.network["vpc"], CidrBlock="10.42.9.0/24",
                                 AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        # All the cases in one run, each a host of its own, with the lab's VPC and subnets unless it names others.
        bad_input = {
            "no-such-vpc": ({"vpc_endpoints_vpc_id": "vpc-0123456789abcdef0"},
                            ["vpc_endpoints_vpc_id: there is no VPC vpc-0123456789abcdef0 in us-east-1"]),
            "no-such-subnet": ({"vpc_endpoints_subnet_ids": [first, "subnet-0123456789abcdef0"]},
                               ["vpc_endpoints_subnet_ids: subnet-0123456789abcdef0 does not exist in us-east-1"]),
            "foreign-subnet": ({"vpc_endpoints_subnet_ids": [first, foreign]},
                               [f"vpc_endpoints_subnet_ids: {foreign} belongs to another VPC than {lab.network['vpc']}"]),
            "one-zone": ({"vpc_endpoints_subnet_ids": [first, twin]},
                         [f"{first} and {twin} are all in us-east-1a", "at most one subnet per Availability Zone"]),
            "unknown-mode": ({"vpc_endpoints_mode": "transit"}, ["vpc_endpoints_mode", "nat, endpoints, both"]),
        }
        cases = run_cases(lab, tmp_path, "bastionless.ssm.vpc_endpoints",
                          {name: extra for name, (extra, _expected) in bad_input.items()},
                          role_vars={"vpc_endpoints_vpc_id": lab.network["vpc"],
                                     "vpc_endpoints_subnet_ids": [p["subnet"] for p in lab.network["private"]]})
        for name, (_extra, expected) in bad_input.items():
            failure = cases.only_failure(name)
            assert all(text in failure for text in expected), (name, failure)
        assert _endpoint_group(lab) is None and not _endpoints(lab, live=False)

    def test_a_region_with_no_price_is_a_warning(self, lab):
        region = "eu-south-2"
        ec2 = lab.client("ec2", region=region)
        vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24", AvailabilityZone=region + "a")
        # The estimate is part of the preflight: the run stops there, in that region.
        output, recap = provision(lab, with_instance_role=False, vpc_id=vpc, vpc_endpoints_region=region,
                                  subnet_ids=[subnet["Subnet"]["SubnetId"]], tags="preflight")
        assert recap["failed"] == 0 and recap["changed"] == 0, output
        assert "[WARNING] No price for eu-south-2 in the role's table" in " ".join(output.split())
