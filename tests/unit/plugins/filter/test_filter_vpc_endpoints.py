# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The vpc_endpoints filters: the cost (how many NAT gateways and endpoints are counted, the arithmetic, the lines),
the NAT paths and what the role says of them, the input and subnet checks, the DNS attributes, the security group's
rules and the check after apply. The role runs them against the lab in tests/integration/test_role_vpc_endpoints.py."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.filter import vpc_endpoints as ve
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import ALLOWED, IMPLICIT_DENY, decide

PRICE = {"nat_gateway_hour": 0.045, "nat_gateway_gb": 0.045, "interface_endpoint_hour": 0.01,
         "interface_endpoint_gb": 0.01}
SUBNETS = {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b", "subnet-c": "us-east-1a"}
SERVICES = ["ssm", "ssmmessages", "ec2messages", "ssm"]


def paths(*nats):
    """NAT paths of the three subnets: a NAT gateway id each, or None for a subnet without a NAT path."""
    return {subnet: {"ok": nat is not None, "nat_gateway_id": nat or ""} for subnet, nat in zip(SUBNETS, nats)}


@pytest.mark.parametrize("nat_paths, count, nats", [
    (paths(None, None, None), 0, 2),  # no NAT path: one per zone (two zones among three subnets)
    (paths("nat-1", "nat-1", "nat-1"), 0, 1),  # every subnet through one NAT gateway: that one
    (paths("nat-1", "nat-2", "nat-1"), 0, 2),
    (paths("nat-1", None, "nat-1"), 0, 2),  # a subnet without: one per zone again
    (paths("nat-1", "nat-1", "nat-1"), 3, 3),  # as many as asked
])
def test_the_nat_gateways_counted(nat_paths, count, nats):
    estimate = ve.cost_estimate(PRICE, SUBNETS, nat_paths, SERVICES, nat_gateway_count=count)
    assert estimate["modes"]["nat"]["detail"].startswith(f"{nats} NAT gateway(s) x $0.045/h x 730 h")
    assert estimate["modes"]["nat"]["monthly"] == round(nats * 0.045 * 730, 2)


def test_endpoints_per_service_and_zone_and_the_data():
    estimate = ve.cost_estimate(PRICE, SUBNETS, paths(None, None, None), SERVICES, monthly_gb=100, mode="both",
                                region="us-east-1", prices_taken="2026-11")
    assert estimate["modes"]["endpoints"] == {
        "monthly": 44.8,  # 3 services x 2 zones x $0.01 x 730 h + 100 GB x $0.01
        "detail": "3 interface endpoints x 2 AZ(s) x $0.01/h x 730 h + 100 GB x $0.01; s3 gateway endpoint free"}
    assert estimate["modes"]["nat"]["monthly"] == 70.2 and estimate["modes"]["both"]["monthly"] == 115.0
    assert estimate["added_monthly"] == 44.8
    assert {k: estimate[k] for k in ("region", "currency", "prices_taken", "hours_per_month", "monthly_gb",
                                     "availability_zones", "nat_gateway_present", "mode")} == {
        "region": "us-east-1", "currency": "USD", "prices_taken": "2026-11", "hours_per_month": 730,
        "monthly_gb": 100, "availability_zones": 2, "nat_gateway_present": False, "mode": "both"}


def test_nat_mode_adds_nothing_and_no_s3_gateway_is_not_called_free():
    estimate = ve.cost_estimate(PRICE, SUBNETS, paths("nat-1", "nat-1", "nat-1"), SERVICES, mode="nat",
                                s3_gateway=False)
    assert estimate["added_monthly"] == 0.0 and estimate["nat_gateway_present"] is True
    assert not estimate["modes"]["endpoints"]["detail"].endswith("free")


def test_the_lines_as_printed():
    estimate = ve.cost_estimate(PRICE, {"subnet-a": "us-east-1a"}, {"subnet-a": {"ok": True, "nat_gateway_id": "n"}},
                                ["ssm", "ssmmessages", "ec2messages"], region="us-east-1", prices_taken="2026-11")
    assert ve.cost_lines(estimate) == [
        "Monthly cost estimate, us-east-1, USD, prices of 2026-11:",
        "  nat       $   32.85  1 NAT gateway(s) x $0.045/h x 730 h + 0 GB x $0.045  (present: SSM adds nothing)",
        "  endpoints $   21.90  3 interface endpoints x 1 AZ(s) x $0.01/h x 730 h + 0 GB x $0.01; s3 gateway endpoint "
        "free",
        "  both      $   54.75  NAT gateways and interface endpoints side by side; SSM traffic takes the endpoints",
        "Chosen: endpoints; it adds $21.90 a month to what exists.",
    ]


# --- NAT paths ----------------------------------------------------------------------------------------------------

TABLES = [
    {"id": "rtb-a", "associations": [{"subnet_id": "subnet-a", "main": False}],
     "routes": [{"destination_cidr_block": "10.0.0.0/16", "gateway_id": "local"},
                {"destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-1"}]},
    {"id": "rtb-b", "associations": [{"subnet_id": "subnet-b", "main": False}],
     "routes": [{"destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-2"}]},
    {"id": "rtb-gone", "associations": [{"subnet_id": "subnet-d", "main": False}],
     "routes": [{"destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-9"}]},
    {"id": "rtb-main", "associations": [{"main": True}],
     "routes": [{"destination_cidr_block": "0.0.0.0/0", "gateway_id": "igw-1"},
                {"destination_cidr_block": "10.0.0.0/16", "gateway_id": "local"}]},
]
NATS = [{"nat_gateway_id": "nat-1", "state": "available"}, {"nat_gateway_id": "nat-2", "state": "pending"}]


def test_each_subnet_by_its_own_table_else_the_main_one():
    found = ve.nat_paths({"subnet-c": "us-east-1c", "subnet-a": "us-east-1a", "subnet-b": "us-east-1b",
                          "subnet-d": "us-east-1d"}, TABLES, NATS, order=["subnet-a", "subnet-b", "subnet-c", "subnet-d"])
    assert list(found) == ["subnet-a", "subnet-b", "subnet-c", "subnet-d"]
    assert found["subnet-a"] == {"availability_zone": "us-east-1a", "route_table_id": "rtb-a",
                                 "nat_gateway_id": "nat-1", "nat_gateway_state": "available", "ok": True}
    assert (found["subnet-b"]["nat_gateway_state"], found["subnet-b"]["ok"]) == ("pending", False)
    assert found["subnet-c"] == {"availability_zone": "us-east-1c", "route_table_id": "rtb-main",
                                 "nat_gateway_id": "", "nat_gateway_state": "", "ok": False}  # an IGW is no NAT path
    assert (found["subnet-d"]["nat_gateway_state"], found["subnet-d"]["ok"]) == ("missing", False)


def test_no_table_at_all():
    assert ve.nat_paths({"subnet-x": "z"}, [], []) == {"subnet-x": {
        "availability_zone": "z", "route_table_id": "", "nat_gateway_id": "", "nat_gateway_state": "", "ok": False}}


# --- inputs and subnets ---------------------------------------------------------------------------------------------

GOOD = {"region": "us-east-1", "vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-a", "subnet-b"]}


def test_good_inputs_have_no_problem():
    assert ve.problems(GOOD) == []


def test_every_input_problem():
    assert ve.problems({"region": "", "vpc_id": "", "subnet_ids": []}) == [
        "vpc_endpoints_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS profile "
        "configuration; set vpc_endpoints_region (or bastionless_region in the inventory).",
        "vpc_endpoints_vpc_id: '' is not a VPC id; set it to the id of the instances' VPC (vpc-...).",
        "vpc_endpoints_subnet_ids: empty; list the private subnets of the instances, one per Availability Zone.",
    ]
    assert ve.problems({**GOOD, "vpc_id": "VPC-1", "subnet_ids": ["subnet-a", "subnet-a"]}) == [
        "vpc_endpoints_vpc_id: 'VPC-1' is not a VPC id; set it to the id of the instances' VPC (vpc-...).",
        "vpc_endpoints_subnet_ids: lists a subnet twice; list each subnet once.",
    ]
    with pytest.raises(AnsibleFilterError, match="vpc_endpoints_problems: subnets is not an input it knows"):
        ve.problems({**GOOD, "subnets": []})


def subnet(subnet_id, zone, vpc="vpc-1"):
    return {"subnet_id": subnet_id, "availability_zone": zone, "vpc_id": vpc}


def test_subnets_that_are_fine():
    assert ve.subnet_problems([subnet("subnet-a", "z1"), subnet("subnet-b", "z2")], ["subnet-a", "subnet-b"],
                              vpc_id="vpc-1", region="us-east-1") == []


def test_every_subnet_problem():
    found = [subnet("subnet-b", "z1"), subnet("subnet-a", "z1"), subnet("subnet-c", "z2", "vpc-2"),
             subnet("subnet-d", "z2", "vpc-2"), subnet("subnet-e", "z3"), subnet("subnet-f", "z3")]
    assert ve.subnet_problems(found, ["subnet-x", "subnet-a", "subnet-b", "subnet-c", "subnet-f", "subnet-e"],
                              vpc_id="vpc-1", region="us-east-1") == [
        "vpc_endpoints_subnet_ids: subnet-x does not exist in us-east-1; list subnets of vpc-1 (aws ec2 describe-subnets "
        "--filters Name=vpc-id,Values=vpc-1).",
        "vpc_endpoints_subnet_ids: subnet-c belongs to another VPC than vpc-1; list only subnets of that VPC.",
        "vpc_endpoints_subnet_ids: subnet-a and subnet-b are all in z1; an interface endpoint takes at most one subnet "
        "per Availability Zone. Keep one subnet of each zone.",
        "vpc_endpoints_subnet_ids: subnet-f and subnet-e are all in z3; an interface endpoint takes at most one subnet "
        "per Availability Zone. Keep one subnet of each zone.",
    ]
    [two] = ve.subnet_problems([subnet("subnet-c", "z1", "vpc-2"), subnet("subnet-d", "z2", "vpc-2")],
                               ["subnet-c", "subnet-d", "subnet-x", "subnet-y"], vpc_id="vpc-1", region="r")[1:]
    assert two.startswith("vpc_endpoints_subnet_ids: subnet-c, subnet-d belong to another VPC than vpc-1")
    assert ve.subnet_problems([], ["subnet-x", "subnet-y"], vpc_id="vpc-1", region="r")[0].startswith(
        "vpc_endpoints_subnet_ids: subnet-x, subnet-y do not exist in r;")


# --- what the role says of the NAT paths ----------------------------------------------------------------------------

PATHS = ve.nat_paths({"subnet-a": "us-east-1a", "subnet-b": "us-east-1b", "subnet-c": "us-east-1c"}, TABLES, NATS)


def test_the_nat_lines():
    assert ve.nat_lines(PATHS) == [
        "subnet-a (us-east-1a): routes 0.0.0.0/0 to nat-1 (available).",
        "subnet-b (us-east-1b): routes 0.0.0.0/0 to nat-2, which is pending.",
        "subnet-c (us-east-1c): no 0.0.0.0/0 route to a NAT gateway in rtb-main.",
    ]


def test_the_nat_message_of_each_mode():
    assert ve.nat_message(PATHS, "nat") == (
        "vpc_endpoints_mode is nat, but subnet-b routes 0.0.0.0/0 to nat-2, which is pending; subnet-c has no "
        "0.0.0.0/0 route to a NAT gateway in rtb-main. Add the route (aws ec2 create-route --destination-cidr-block "
        "0.0.0.0/0 --nat-gateway-id ...) or set vpc_endpoints_mode to endpoints.")
    assert ve.nat_message(PATHS, "both") == (
        "vpc_endpoints_mode is both, but subnet-b, subnet-c have no route to an available NAT gateway: Session Manager "
        "will work through the endpoints, but package installs and other internet traffic will not.")
    assert "but subnet-c has no route" in ve.nat_message({"subnet-c": PATHS["subnet-c"]}, "both")
    assert ve.nat_message(PATHS, "endpoints") == ""
    assert ve.nat_message({"subnet-a": PATHS["subnet-a"]}, "nat") == ""


# --- DNS ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("support, hostnames, mode, off", [
    (True, True, "endpoints", []),
    (True, False, "nat", []),
    (True, False, "both", ["enableDnsHostnames"]),
    (False, True, "nat", ["enableDnsSupport"]),
    (False, False, "endpoints", ["enableDnsSupport", "enableDnsHostnames"]),
])
def test_dns_attributes_off(support, hostnames, mode, off):
    assert ve.dns_off({"enable_dns_support": support, "enable_dns_hostnames": hostnames}, mode) == off


def test_the_dns_message():
    assert ve.dns_message([], "vpc-1") == ""
    assert ve.dns_message(["enableDnsSupport", "enableDnsHostnames"], "vpc-1") == (
        "vpc-1 has enableDnsSupport and enableDnsHostnames off; the private DNS of interface endpoints needs "
        "enableDnsSupport and enableDnsHostnames. Set vpc_endpoints_fix_vpc_dns to true to let the role turn them on, "
        "or turn them on yourself (aws ec2 modify-vpc-attribute --vpc-id vpc-1 --enable-dns-support).")
    assert ve.dns_message(["enableDnsSupport"], "vpc-1", "nat") == (
        "vpc-1 has enableDnsSupport off; instances need enableDnsSupport to resolve the SSM endpoints. Set "
        "vpc_endpoints_fix_vpc_dns to true to let the role turn it on, or turn it on yourself (aws ec2 "
        "modify-vpc-attribute --vpc-id vpc-1 --enable-dns-support).")
    assert ve.dns_message(["enableDnsHostnames"], "vpc-1").endswith("--enable-dns-hostnames).")


# --- the security group's rules -------------------------------------------------------------------------------------


def test_security_group_rules():
    assert ve.security_group_rules([], ["10.0.0.0/16", "10.1.0.0/16"]) == [
        {"proto": "tcp", "ports": [443], "cidr_ip": ["10.0.0.0/16", "10.1.0.0/16"],
         "rule_desc": "HTTPS from the VPC to the Session Manager endpoints"}]
    assert ve.security_group_rules(["sg-1", "sg-2"], ["10.0.0.0/16"]) == [
        {"proto": "tcp", "ports": [443], "group_id": "sg-1", "rule_desc": "HTTPS from sg-1 to the Session Manager "
                                                                          "endpoints"},
        {"proto": "tcp", "ports": [443], "group_id": "sg-2", "rule_desc": "HTTPS from sg-2 to the Session Manager "
                                                                          "endpoints"}]


# --- after apply ----------------------------------------------------------------------------------------------------

GROUP = {"group_id": "sg-1", "ip_permissions": [
    {"ip_protocol": "udp", "from_port": 53, "to_port": 53}, {"ip_protocol": "tcp", "from_port": 0, "to_port": 65535}]}
VPC = {"enable_dns_support": True, "enable_dns_hostnames": True}


def endpoint(service, dns=True, subnets=("subnet-a", "subnet-b"), groups=("sg-1",)):
    return {"service_name": f"com.amazonaws.us-east-1.{service}", "private_dns_enabled": dns,
            "subnet_ids": list(subnets), "groups": [{"group_id": g} for g in groups]}


def verify(endpoints, group=None, vpc=None, services=("ssm", "ssmmessages", "ssm")):
    """The checks of the endpoints given, with GROUP and VPC unless told otherwise."""
    group, vpc = GROUP if group is None else group, VPC if vpc is None else vpc
    return ve.verify_problems(endpoints, list(services), ["subnet-b", "subnet-a"], security_group=group, vpc=vpc,
                              region="us-east-1", vpc_id="vpc-1", security_group_name="bastionless-ssm-endpoints")


def test_verify_as_asked():
    assert verify([endpoint("ssm"), endpoint("ssmmessages", subnets=("subnet-b", "subnet-a")), endpoint("s3")]) == []


def test_verify_names_every_problem():
    assert verify([endpoint("ssm", dns=False), endpoint("ec2messages"), endpoint("ssmmessages", groups=("sg-9",))],
                  services=("ssm", "ssmmessages", "ec2messages", "kms"), group={}, vpc={"enable_dns_support": True}) == [
        "The security group bastionless-ssm-endpoints of vpc-1 does not exist.",
        "The ssm endpoint of vpc-1 is not as it should be: private DNS is off.",
        "The kms endpoint of vpc-1 is not as it should be: missing or not available.",
        "vpc-1 still has DNS support or DNS hostnames off.",
    ]
    assert verify([endpoint("ssm", subnets=("subnet-a",)), endpoint("ssmmessages", groups=())],
                  group={"group_id": "sg-1", "ip_permissions": [{"ip_protocol": "tcp", "from_port": 22,
                                                                 "to_port": 22}]}) == [
        "The security group bastionless-ssm-endpoints of vpc-1 does not admit TCP 443.",
        "The ssm endpoint of vpc-1 is not as it should be: its subnets are subnet-a.",
        "The ssmmessages endpoint of vpc-1 is not as it should be: its security groups lack sg-1.",
    ]


# --- endpoint policies ------------------------------------------------------------------------------------------

ACCOUNT = "123456789012"


def _endpoint_decision(policy: dict, action: str, resource: str, context: dict) -> str:
    """An endpoint policy judged like an identity policy: its Principal is "*" for every statement here."""
    statements = [{key: value for key, value in statement.items() if key != "Principal"}
                  for statement in policy["Statement"]]
    return decide([{"Version": policy["Version"], "Statement": statements}], action, resource, context)


@pytest.mark.parametrize("caller, org, allowed", [
    ({"aws:PrincipalAccount": ACCOUNT}, "", True),
    ({"aws:PrincipalAccount": "210987654321"}, "", False),
    ({}, "", False),  # an anonymous request
    ({"aws:PrincipalAccount": "210987654321", "aws:PrincipalOrgID": "o-abcdefghij"}, "o-abcdefghij", True),
    ({"aws:PrincipalAccount": ACCOUNT, "aws:PrincipalOrgID": "o-otherorgxyz"}, "o-abcdefghij", False),
])
def test_interface_endpoints_admit_the_accounts_or_the_organizations_principals_only(caller, org, allowed):
    policy = ve.interface_policy(ACCOUNT, org)
    decision = _endpoint_decision(policy, "ssm:StartSession", f"arn:aws:ssm:eu-west-1:{ACCOUNT}:document/x", caller)
    assert decision == (ALLOWED if allowed else IMPLICIT_DENY)
    assert [s["Principal"] for s in policy["Statement"]] == ["*"]


@pytest.mark.parametrize("action, resource, allowed", [
    ("s3:PutObject", "arn:aws:s3:::acme-sessions/sessions/alice-0123.log", True),
    ("s3:GetEncryptionConfiguration", "arn:aws:s3:::acme-sessions", True),
    ("s3:GetObject", "arn:aws:s3:::acme-transfer/i-0123/module.py", True),
    ("s3:GetObject", "arn:aws:s3:::amazon-ssm-eu-west-1/latest/debian_amd64/amazon-ssm-agent.deb", True),
    ("s3:GetObject", "arn:aws:s3:::eu-west-1-birdwatcher-prod/inventory/x", True),
    ("s3:GetObject", "arn:aws:s3:::patch-baseline-snapshot-eu-west-1/x", True),
    ("s3:GetObject", "arn:aws:s3:::reports-2026/q4.csv", True),  # the extension list, with a wildcard
    ("s3:PutObject", "arn:aws:s3:::attacker-drop/loot.tar", False),  # exfiltration through the endpoint
    ("s3:GetObject", "arn:aws:s3:::amazon-ssm-us-east-1/x", False),  # another region's agent bucket
    ("s3:PutObject", "arn:aws:s3:::amazon-ssm-eu-west-1/x", False),  # AWS's buckets are read only
    ("s3:DeleteObject", "arn:aws:s3:::acme-sessions/sessions/alice-0123.log", False),  # nor are transcripts deleted
])
def test_the_gateway_endpoint_lets_through_the_fleets_and_the_agents_buckets_only(action, resource, allowed):
    policy = ve.gateway_policy("eu-west-1", ["acme-sessions", "acme-transfer"], ["reports-*"])
    assert _endpoint_decision(policy, action, resource, {}) == (ALLOWED if allowed else IMPLICIT_DENY)


def test_the_agents_buckets_follow_aws_list_and_the_partition():
    policy = ve.gateway_policy("cn-north-1", [], [])  # the partition follows the region
    [agent] = policy["Statement"]
    assert agent["Sid"] == "AgentBuckets" and agent["Action"] == ["s3:GetObject"]
    assert agent["Resource"] == [f"arn:aws-cn:s3:::{name}/*" for name in (
        "aws-ssm-cn-north-1", "aws-windows-downloads-cn-north-1", "amazon-ssm-cn-north-1",
        "amazon-ssm-packages-cn-north-1", "cn-north-1-birdwatcher-prod", "aws-ssm-distributor-file-cn-north-1",
        "aws-ssm-document-attachments-cn-north-1", "patch-baseline-snapshot-cn-north-1")]


def test_fleet_buckets_once_each_and_empty_names_dropped():
    buckets = ve.s3_buckets("eu-west-1", ["acme-sessions", "", "acme-transfer"], ["acme-sessions"])
    assert buckets["fleet"] == ["acme-sessions", "acme-transfer"]


@pytest.mark.parametrize("kwargs, expected", [
    ({"org_id": "org-1"}, "vpc_endpoints_principal_org_id: 'org-1' is not an organization id;"),
    ({"account": "12345"}, "vpc_endpoints policies: the account id '12345' is not 12 digits;"),
    ({"extra_buckets": ["s3://logs"]}, "vpc_endpoints_s3_extra_buckets: 's3://logs' is not a bucket name;"),
    ({"fleet_buckets": ["arn:aws:s3:::a", "B"]},
     "vpc_endpoints_s3_buckets: 'arn:aws:s3:::a', 'B' are not bucket names;"),
])
def test_policy_input_problems_name_the_variable(kwargs, expected):
    given = {"account": ACCOUNT, **kwargs}
    [problem] = ve.policy_problems(given.pop("account"), **given)
    assert problem.startswith(expected), problem


def test_good_policy_inputs_have_no_problem():
    assert ve.policy_problems(ACCOUNT, "", ["acme-sessions"], ["reports-*"]) == []
    assert ve.policy_problems("", "o-abcdefghij") == []  # the organization replaces the account
