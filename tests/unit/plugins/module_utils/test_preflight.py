"""The reasoning of bastionless.ssm.ssm_preflight (module_utils/_preflight.py), on data shaped as boto3 returns it."""

import datetime
import json
import os
import re

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight as pf

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
REGION = "us-east-1"
NODE = "i-0123456789abcdef0"
ARN = f"arn:aws:ec2:{REGION}:123456789012:instance/{NODE}"
VPC = "vpc-11111111"
SUBNET, PUBLIC = "subnet-private1", "subnet-public1"
TABLE, PUBLIC_TABLE = "rtb-private1", "rtb-public1"
NAT, IGW = "nat-11111111", "igw-11111111"
NODE_SG, ENDPOINT_SG = "sg-node", "sg-endpoints"
NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
CORE_DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["ssm:UpdateInstanceInformation", "ssmmessages:*", "ec2messages:GetMessages"],
     "Resource": "*"}]}


def codes(findings):
    return [f["code"] for f in findings]


# --- builders ---------------------------------------------------------------------------------------------


def node(**overrides):
    facts = {"id": NODE, "subnet_id": SUBNET, "vpc_id": VPC, "az": "us-east-1a", "private_ip": "10.0.1.10",
             "public_ip": None, "group_ids": [NODE_SG]}
    facts.update(overrides)
    return facts


def route_table(table_id, subnet, *routes, main=False):
    associations = [{"SubnetId": subnet, "RouteTableId": table_id}] if subnet else []
    if main:
        associations.append({"Main": True, "RouteTableId": table_id})
    return {"RouteTableId": table_id, "VpcId": VPC, "Associations": associations,
            "Routes": [{"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}, *routes]}


def to_nat(nat=NAT, state="active"):
    return {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": nat, "State": state}


def to_igw(igw=IGW):
    return {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw, "State": "active"}


def endpoint(service, endpoint_id=None, private_dns=True, state="available", groups=(ENDPOINT_SG,),
             subnets=(SUBNET,), kind="Interface", route_tables=()):
    return {"VpcEndpointId": endpoint_id or f"vpce-{service}", "VpcId": VPC, "VpcEndpointType": kind,
            "ServiceName": f"com.amazonaws.{REGION}.{service}", "State": state, "PrivateDnsEnabled": private_dns,
            "Groups": [{"GroupId": g} for g in groups], "SubnetIds": list(subnets), "RouteTableIds": list(route_tables)}


def https_from(cidr=None, group=None):
    rule = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [], "UserIdGroupPairs": []}
    if cidr:
        rule["IpRanges"].append({"CidrIp": cidr})
    if group:
        rule["UserIdGroupPairs"].append({"GroupId": group})
    return rule


def vpc(routes=(), nats=(), endpoints=(), endpoint_rules=(https_from("10.0.0.0/16"),), dns=(True, True), igw=True):
    """A VPC with a private subnet (the node's) and a public one whose table routes to an attached IGW."""
    tables = [route_table(TABLE, SUBNET, *routes),
              route_table(PUBLIC_TABLE, PUBLIC, *([to_igw()] if igw else [])),
              route_table("rtb-main", None, main=True)]
    return {
        "id": VPC,
        "dns_support": dns[0],
        "dns_hostnames": dns[1],
        "route_tables": tables,
        "nat_gateways": [{"NatGatewayId": NAT, "VpcId": VPC, "SubnetId": PUBLIC, "State": "available",
                          "ConnectivityType": "public"}, *nats] if nats == () else list(nats),
        "internet_gateways": [{"InternetGatewayId": IGW, "Attachments": [{"VpcId": VPC, "State": "available"}]}],
        "endpoints": list(endpoints),
        "subnets": {SUBNET: {"SubnetId": SUBNET, "AvailabilityZone": "us-east-1a"},
                    "subnet-b": {"SubnetId": "subnet-b", "AvailabilityZone": "us-east-1b"},
                    PUBLIC: {"SubnetId": PUBLIC, "AvailabilityZone": "us-east-1a"}},
        "security_groups": {ENDPOINT_SG: {"GroupId": ENDPOINT_SG, "IpPermissions": list(endpoint_rules)},
                            NODE_SG: {"GroupId": NODE_SG, "IpPermissions": []}},
        "default_group_id": "sg-default",
    }


SSM_ENDPOINTS = [endpoint(s) for s in pf.SSM_SERVICES]


# --- the catalog and the docs ---------------------------------------------------------------------------


def test_catalog_is_well_formed():
    for code, (category, severity, meaning) in pf.CATALOG.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", code)
        assert category in pf.CATEGORIES and severity in pf.SEVERITIES and meaning.endswith(".")


def test_every_code_is_documented_in_the_module_and_the_troubleshooting_guide():
    with open(os.path.join(ROOT, "plugins", "modules", "ssm_preflight.py"), encoding="utf-8") as handle:
        module_doc = handle.read().split('EXAMPLES = r"""')[0]
    with open(os.path.join(ROOT, "docs", "troubleshooting.md"), encoding="utf-8") as handle:
        guide = handle.read()
    for code in pf.CATALOG:
        assert f"C({code})" in module_doc, code
        assert f"`{code}`" in guide, code
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", guide, re.M))
    assert documented == set(pf.CATALOG), documented ^ set(pf.CATALOG)


def test_finding_shape():
    item = pf.finding("NAT_ROUTE_MISSING", "m.", "f.", route_table_id=TABLE, empty=None, none=[])
    assert item == {"code": "NAT_ROUTE_MISSING", "category": "network", "severity": "error", "message": "m.",
                    "fix": "f.", "resources": {"route_table_id": TABLE}}
    assert pf.finding("NO_S3_PATH", "m.", "f.")["severity"] == "warning"
    assert pf.finding("NO_S3_PATH", "m.", "f.", severity="error")["severity"] == "error"


def test_dedupe_keeps_one_of_each_and_puts_errors_first():
    warning = pf.finding("NO_S3_PATH", "a.", "f.")
    error = pf.finding("ENDPOINT_SG_NO_443", "b.", "f.")
    assert pf.dedupe([warning, error, dict(error)]) == [error, warning]


@pytest.mark.parametrize("value, bad", [
    ([NODE, "mi-0123456789abcdef0", "i-12345678"], []),
    (["i-XYZ", "web-1", "", NODE], ["i-XYZ", "web-1", ""]),
    (None, []),
])
def test_invalid_ids(value, bad):
    assert pf.invalid_ids(value) == bad


@pytest.mark.parametrize("caller, expected", [
    ("arn:aws:iam::123456789012:user/ops/alice", ("user", "arn:aws:iam::123456789012:user/ops/alice")),
    ("arn:aws:sts::123456789012:user/moto", ("user", "arn:aws:iam::123456789012:user/moto")),
    ("arn:aws:sts::123456789012:assumed-role/Admin/alice@example.com", ("role", "Admin")),
    ("arn:aws-cn:iam::123456789012:role/path/Deployer", ("role", "Deployer")),
])
def test_simulation_principal(caller, expected):
    assert pf.simulation_principal(caller) == expected


@pytest.mark.parametrize("caller, reason", [
    ("arn:aws:iam::123456789012:root", "root user"),
    ("arn:aws:sts::123456789012:federated-user/bob", "not an IAM user or role"),
])
def test_simulation_principal_cannot(caller, reason):
    kind, why = pf.simulation_principal(caller)
    assert kind is None and reason in why


@pytest.mark.parametrize("document, arn", [
    ("SSM-SessionManagerRunShell", "arn:aws:ssm:us-east-1:123456789012:document/SSM-SessionManagerRunShell"),
    ("AWS-StartPortForwardingSession", "arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSession"),
    ("arn:aws:ssm:us-east-1:123456789012:document/Mine", "arn:aws:ssm:us-east-1:123456789012:document/Mine"),
])
def test_document_arn(document, arn):
    assert pf.document_arn(document, "aws", REGION, "123456789012") == arn


def test_node_arn():
    assert pf.node_arn(NODE, "aws", REGION, "123456789012") == ARN
    assert pf.node_arn("mi-0123456789abcdef0", "aws-cn", "cn-north-1", "1") == \
        "arn:aws-cn:ssm:cn-north-1:1:managed-instance/mi-0123456789abcdef0"


def test_context_entries_give_both_tag_keys():
    assert pf.context_entries({"Env": "dev"}) == [
        {"ContextKeyName": "ssm:resourceTag/Env", "ContextKeyValues": ["dev"], "ContextKeyType": "string"},
        {"ContextKeyName": "aws:ResourceTag/Env", "ContextKeyValues": ["dev"], "ContextKeyType": "string"},
    ]


@pytest.mark.parametrize("value, expected", [
    (datetime.datetime(2025, 1, 1, 11, 57, tzinfo=datetime.timezone.utc), "3 min"),
    (datetime.datetime(2025, 1, 1, 9, 55, tzinfo=datetime.timezone.utc), "2 h 5 min"),
    (datetime.datetime(2024, 12, 28, 11, 0, tzinfo=datetime.timezone.utc), "4 d 1 h"),
    ("2025-01-01T11:59:30Z", "30 s"),
    (None, "an unknown time"),
])
def test_ago(value, expected):
    assert pf.ago(value, NOW) == expected


def test_iso_of_naive_epoch_and_text():
    assert pf.iso(datetime.datetime(2025, 1, 1, 12, 0)) == "2025-01-01T12:00:00+00:00"
    assert pf.iso(0) == "1970-01-01T00:00:00+00:00"
    assert pf.iso("2025-01-01T13:00:00+01:00") == "2025-01-01T12:00:00+00:00"
    assert pf.iso("not a time") is None


# --- policies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust, services, expected", [
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
     pf.EC2_PRINCIPALS, True),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": "sts:*"}]},
     pf.EC2_PRINCIPALS, False),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ssm.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
     pf.SSM_PRINCIPALS, True),
    ({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"},
                    {"Effect": "Deny", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
     pf.EC2_PRINCIPALS, False),
    # URL-encoded JSON text, as the raw IAM API returns it
    ("%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22ec2.amazonaws"
     "%2Ecom%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D", pf.EC2_PRINCIPALS, True),
    (None, pf.EC2_PRINCIPALS, False),
])
def test_trusts(trust, services, expected):
    assert pf.trusts(trust, services) is expected


@pytest.mark.parametrize("documents, boundary, missing", [
    ([CORE_DOC], None, []),
    ([json.dumps(CORE_DOC)], None, []),
    ([], None, list(pf.CORE_ACTIONS)),
    # an equivalent split over two policies, one scoped to the instance
    ([{"Statement": [{"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": ARN}]},
      {"Statement": [{"Effect": "Allow", "Action": ["ssmmessages:*", "ec2messages:*"], "Resource": "*"}]}], None, []),
    # scoped to another instance
    ([{"Statement": [{"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation",
                      "Resource": "arn:aws:ec2:*:*:instance/i-other"}]},
      {"Statement": [{"Effect": "Allow", "Action": ["ssmmessages:*", "ec2messages:*"], "Resource": "*"}]}],
     None, ["ssm:UpdateInstanceInformation"]),
    # an explicit Deny wins
    ([CORE_DOC, {"Statement": [{"Effect": "Deny", "Action": "ssmmessages:Open*", "Resource": "*"}]}], None,
     ["ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]),
    # NotAction
    ([{"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}], None, []),
    # the boundary takes away what it does not allow
    ([CORE_DOC], {"Statement": [{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}]},
     [a for a in pf.CORE_ACTIONS if not a.startswith("ssm:")]),
])
def test_missing_core_actions(documents, boundary, missing):
    assert pf.missing_core_actions(documents, boundary, ARN) == missing


@pytest.mark.parametrize("arn, known", [
    ("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", True),
    ("arn:aws-cn:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy", True),
    ("arn:aws:iam::123456789012:policy/AmazonSSMManagedInstanceCore", False),
    ("arn:aws:iam::aws:policy/ReadOnlyAccess", False),
])
def test_known_core_policy(arn, known):
    assert pf.known_core_policy(arn) is known


# --- agent ------------------------------------------------------------------------------------------------


def test_instance_findings():
    assert pf.instance_findings(NODE, {"State": {"Name": "running"}}) == []
    assert codes(pf.instance_findings(NODE, None)) == ["INSTANCE_NOT_FOUND"]
    [stopped] = pf.instance_findings(NODE, {"State": {"Name": "stopped"}})
    assert stopped["code"] == "INSTANCE_NOT_RUNNING" and "start-instances" in stopped["fix"]
    [gone] = pf.instance_findings(NODE, {"State": {"Name": "terminated"}})
    assert "gone" in gone["fix"] and gone["resources"]["state"] == "terminated"


def test_agent_never_registered_points_at_the_causes_or_at_the_agent():
    [with_causes] = pf.agent_findings(NODE, None, NOW, True)
    assert with_causes["code"] == "AGENT_NOT_REGISTERED" and "other findings" in with_causes["fix"]
    [alone] = pf.agent_findings(NODE, None, NOW, False)
    assert "amazon-ssm-agent" in alone["fix"]
    [hybrid] = pf.agent_findings("mi-0123456789abcdef0", None, NOW, False)
    assert "hybrid activation" in hybrid["fix"]


def test_agent_connection_lost_since_a_time():
    last = datetime.datetime(2025, 1, 1, 11, 45, tzinfo=datetime.timezone.utc)
    [lost] = pf.agent_findings(NODE, {"PingStatus": "ConnectionLost", "LastPingDateTime": last}, NOW, False)
    assert lost["code"] == "AGENT_CONNECTION_LOST"
    assert "2025-01-01T11:45:00+00:00 (15 min ago)" in lost["message"]
    assert lost["resources"]["last_ping"] == "2025-01-01T11:45:00+00:00"
    assert "serial console" in lost["fix"]
    assert pf.agent_findings(NODE, {"PingStatus": "Online"}, NOW, True) == []
    assert codes(pf.agent_findings(NODE, {"PingStatus": "Inactive"}, NOW, False)) == ["AGENT_INACTIVE"]


# --- IAM --------------------------------------------------------------------------------------------------

EC2_TRUST = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole"}]}
SSM_TRUST = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ssm.amazonaws.com"},
                            "Action": "sts:AssumeRole"}]}


def instance(tokens="optional", endpoint="enabled", profile=True):
    found = {"InstanceId": NODE, "State": {"Name": "running"},
             "MetadataOptions": {"HttpTokens": tokens, "HttpEndpoint": endpoint}}
    if profile:
        found["IamInstanceProfile"] = {"Arn": "arn:aws:iam::123456789012:instance-profile/node"}
    return found


def role(trust=None, documents=(CORE_DOC,), boundary=None, name="node"):
    return {"name": name, "arn": f"arn:aws:iam::123456789012:role/{name}", "trust": trust or EC2_TRUST,
            "documents": list(documents), "boundary": boundary,
            "boundary_arn": "arn:aws:iam::123456789012:policy/b" if boundary else None}


def profile(found=True, the_role="default", error=None):
    return {"arn": "arn:aws:iam::123456789012:instance-profile/node", "found": found,
            "role": role() if the_role == "default" else the_role, "error": error}


@pytest.mark.parametrize("the_profile, expected", [
    (profile(), []),
    (profile(found=False), ["INSTANCE_PROFILE_NOT_FOUND"]),
    (profile(the_role=None), ["INSTANCE_PROFILE_HAS_NO_ROLE"]),
    (profile(the_role=role(trust=SSM_TRUST)), ["ROLE_TRUST_POLICY"]),
    (profile(the_role=role(documents=())), ["ROLE_MISSING_PERMISSIONS"]),
    (profile(the_role=role(trust={"Statement": []}, documents=())), ["ROLE_TRUST_POLICY", "ROLE_MISSING_PERMISSIONS"]),
    (profile(error="AccessDenied: no"), ["IAM_NOT_CHECKED"]),
    (profile(the_role={"name": "node", "error": "AccessDenied: no"}), ["IAM_NOT_CHECKED"]),
])
def test_iam_findings_with_a_profile(the_profile, expected):
    assert codes(pf.iam_findings(instance(), the_profile, None, ARN)) == expected


def test_missing_permissions_names_the_actions_and_the_managed_policy():
    [item] = pf.iam_findings(instance(), profile(the_role=role(documents=())), None, ARN)
    assert item["resources"]["missing_actions"] == list(pf.CORE_ACTIONS)
    assert "--role-name node --policy-arn arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" in item["fix"]


def test_imds_disabled_comes_on_top():
    found = pf.iam_findings(instance(endpoint="disabled"), profile(), None, ARN)
    assert codes(found) == ["IMDS_DISABLED"]


@pytest.mark.parametrize("tokens, dhmc, expected", [
    ("optional", {"enabled": False, "value": "$None"}, ["NO_INSTANCE_PROFILE"]),
    ("required", {"enabled": True, "value": "service-role/D", "role": role(SSM_TRUST, name="D")}, []),
    ("optional", {"enabled": True, "value": "service-role/D", "role": role(SSM_TRUST, name="D")},
     ["DHMC_IMDSV2_NOT_REQUIRED"]),
    ("required", {"enabled": True, "value": "service-role/D", "role": None}, ["DHMC_ROLE_NOT_FOUND"]),
    ("required", {"enabled": True, "value": "D", "role": role(EC2_TRUST, name="D")}, ["DHMC_ROLE_TRUST_POLICY"]),
    ("required", {"enabled": True, "value": "D", "role": role(SSM_TRUST, (), name="D")},
     ["DHMC_ROLE_MISSING_PERMISSIONS"]),
    ("required", {"error": "AccessDeniedException: no"}, ["IAM_NOT_CHECKED"]),
])
def test_iam_findings_without_a_profile(tokens, dhmc, expected):
    assert codes(pf.iam_findings(instance(tokens, profile=False), None, dhmc, ARN)) == expected


def test_no_instance_profile_fix_names_both_ways():
    [item] = pf.iam_findings(instance(profile=False), None, {"enabled": False}, ARN)
    assert "instance_profile_association" in item["fix"] and pf.DHMC_SETTING in item["fix"]


# --- network ----------------------------------------------------------------------------------------------


def test_nat_path_is_fine():
    assert pf.network_findings(node(), vpc(routes=[to_nat()]), REGION, True) == []


def test_no_route_and_no_nat():
    [item] = pf.network_findings(node(), vpc(nats=[]), REGION, False)
    assert item["code"] == "NO_ROUTE_TO_INTERNET" and item["severity"] == "error"
    assert item["resources"]["route_table_id"] == TABLE


def test_nat_exists_but_the_route_table_does_not_point_to_it():
    [item] = pf.network_findings(node(), vpc(), REGION, False)
    assert item["code"] == "NAT_ROUTE_MISSING" and item["severity"] == "error"
    assert item["resources"] == {"instance_id": NODE, "nat_gateway_id": NAT, "route_table_id": TABLE,
                                 "subnet_id": SUBNET}
    assert f"--route-table-id {TABLE} --destination-cidr-block 0.0.0.0/0 --nat-gateway-id {NAT}" in item["fix"]


def test_sessions_open_over_endpoints_but_packages_fail_without_the_nat_route():
    """The guide's last symptom row: the node is fine for SSM, the NAT is there, the route is not."""
    [item] = pf.network_findings(node(), vpc(endpoints=SSM_ENDPOINTS), REGION, True)
    assert item["code"] == "NAT_ROUTE_MISSING" and item["severity"] == "warning"
    assert "package installs" in item["message"]


def test_endpoints_only_vpc_without_nat_is_fine():
    assert pf.network_findings(node(), vpc(nats=[], endpoints=SSM_ENDPOINTS), REGION, True) == []


@pytest.mark.parametrize("nat, reason", [
    ({"NatGatewayId": NAT, "VpcId": VPC, "SubnetId": PUBLIC, "State": "deleted"}, "NAT_GATEWAY_NOT_AVAILABLE"),
    ({"NatGatewayId": NAT, "VpcId": VPC, "SubnetId": PUBLIC, "State": "failed"}, "NAT_GATEWAY_NOT_AVAILABLE"),
    ({"NatGatewayId": NAT, "VpcId": VPC, "SubnetId": PUBLIC, "State": "available", "ConnectivityType": "private"},
     "NAT_GATEWAY_NO_INTERNET"),
])
def test_broken_nat_gateways(nat, reason):
    [item] = pf.network_findings(node(), vpc(routes=[to_nat()], nats=[nat]), REGION, False)
    assert item["code"] == reason


def test_a_vanished_nat_gateway_is_a_blackhole():
    [item] = pf.network_findings(node(), vpc(routes=[to_nat("nat-gone", state="blackhole")]), REGION, False)
    assert item["code"] == "NAT_GATEWAY_NOT_AVAILABLE" and "blackhole" in item["message"]
    assert f"--nat-gateway-id {NAT}" in item["fix"]  # the available one to point at instead


def test_nat_in_a_subnet_without_internet():
    [item] = pf.network_findings(node(), vpc(routes=[to_nat()], igw=False), REGION, False)
    assert item["code"] == "NAT_GATEWAY_NO_INTERNET"


def test_internet_gateway_needs_a_public_ip():
    assert codes(pf.network_findings(node(), vpc(routes=[to_igw()]), REGION, False)) == ["IGW_WITHOUT_PUBLIC_IP"]
    assert pf.network_findings(node(public_ip="3.3.3.3"), vpc(routes=[to_igw()]), REGION, True) == []


def test_an_unknown_target_is_unverified_and_only_said_for_a_node_that_is_not_online():
    tgw = {"DestinationCidrBlock": "0.0.0.0/0", "TransitGatewayId": "tgw-1", "State": "active"}
    assert pf.network_findings(node(), vpc(routes=[tgw]), REGION, True) == []
    [item] = pf.network_findings(node(), vpc(routes=[tgw]), REGION, False)
    assert item["code"] == "NETWORK_PATH_UNVERIFIED" and item["severity"] == "warning"


def test_endpoints_path_is_fine_with_cidr_or_group_rules():
    assert pf.network_findings(node(), vpc(nats=[], endpoints=SSM_ENDPOINTS), REGION, True) == []
    by_group = vpc(nats=[], endpoints=SSM_ENDPOINTS, endpoint_rules=[https_from(group=NODE_SG)])
    assert pf.network_findings(node(), by_group, REGION, True) == []
    all_traffic = vpc(nats=[], endpoints=SSM_ENDPOINTS, endpoint_rules=[{"IpProtocol": "-1", "IpRanges": [
        {"CidrIp": "0.0.0.0/0"}]}])
    assert pf.network_findings(node(), all_traffic, REGION, True) == []


def test_one_endpoint_missing_is_named_by_service():
    endpoints = [endpoint("ssm"), endpoint("ec2messages")]
    [item] = pf.network_findings(node(), vpc(nats=[], endpoints=endpoints), REGION, False)
    assert item["code"] == "ENDPOINT_MISSING" and item["resources"]["service"] == "ssmmessages"
    assert f"com.amazonaws.{REGION}.ssmmessages" in item["message"]


def test_one_endpoint_missing_with_a_nat_but_no_route_names_both():
    endpoints = [endpoint("ssm"), endpoint("ec2messages")]
    found = pf.network_findings(node(), vpc(endpoints=endpoints), REGION, False)
    assert codes(found) == ["ENDPOINT_MISSING", "NAT_ROUTE_MISSING"]


def test_private_dns_off():
    endpoints = [endpoint("ssm", private_dns=False), endpoint("ssmmessages"), endpoint("ec2messages")]
    [item] = pf.network_findings(node(), vpc(nats=[], endpoints=endpoints), REGION, False)
    assert item["code"] == "ENDPOINT_PRIVATE_DNS_OFF" and "--private-dns-enabled" in item["fix"]
    # with a working NAT route the public name is reached through the NAT: fine
    assert pf.network_findings(node(), vpc(routes=[to_nat()], endpoints=endpoints), REGION, True) == []


def test_endpoint_security_group_without_443():
    closed = vpc(nats=[], endpoints=SSM_ENDPOINTS, endpoint_rules=[https_from("10.9.0.0/16")])
    found = pf.network_findings(node(), closed, REGION, False)
    assert codes(found) == ["ENDPOINT_SG_NO_443"] * 3
    assert found[0]["resources"]["security_group_ids"] == [ENDPOINT_SG]
    # as on AWS, private DNS sends the agent to the endpoint even when a NAT route exists
    closed_with_nat = vpc(routes=[to_nat()], endpoints=SSM_ENDPOINTS, endpoint_rules=[])
    assert codes(pf.network_findings(node(), closed_with_nat, REGION, False)) == ["ENDPOINT_SG_NO_443"] * 3


def test_an_endpoint_without_groups_uses_the_default_group():
    endpoints = [endpoint(s, groups=()) for s in pf.SSM_SERVICES]
    facts = vpc(nats=[], endpoints=endpoints)
    assert codes(pf.network_findings(node(), facts, REGION, False)) == ["ENDPOINT_SG_NO_443"] * 3
    facts["security_groups"]["sg-default"] = {"GroupId": "sg-default", "IpPermissions": [https_from("10.0.1.0/24")]}
    assert pf.network_findings(node(), facts, REGION, True) == []


@pytest.mark.parametrize("dns, code", [((False, True), "VPC_DNS_SUPPORT_OFF"), ((True, False), "VPC_DNS_HOSTNAMES_OFF")])
def test_vpc_dns_attributes(dns, code):
    found = pf.network_findings(node(), vpc(nats=[], endpoints=SSM_ENDPOINTS, dns=dns), REGION, False)
    assert codes(found) == [code]  # once for the VPC, not once per endpoint


def test_endpoint_in_another_zone_is_a_warning():
    endpoints = [endpoint(s, subnets=("subnet-b",)) for s in pf.SSM_SERVICES]
    found = pf.network_findings(node(), vpc(nats=[], endpoints=endpoints), REGION, True)
    assert codes(found) == ["ENDPOINT_NOT_IN_AZ"] * 3 and {f["severity"] for f in found} == {"warning"}


def test_an_endpoint_that_is_not_available_yet():
    endpoints = [endpoint("ssm", state="pending"), endpoint("ssmmessages"), endpoint("ec2messages")]
    [item] = pf.network_findings(node(), vpc(nats=[], endpoints=endpoints), REGION, False)
    assert item["code"] == "ENDPOINT_MISSING" and "pending" in item["message"]


def test_route_table_of_falls_back_to_the_main_table():
    tables = [route_table("rtb-a", "subnet-a"), route_table("rtb-main", None, main=True)]
    assert pf.route_table_of(tables, "subnet-a", VPC)["RouteTableId"] == "rtb-a"
    assert pf.route_table_of(tables, "subnet-other", VPC)["RouteTableId"] == "rtb-main"
    assert pf.route_table_of(tables, "subnet-a", "vpc-other") is None


# --- S3 path ----------------------------------------------------------------------------------------------


def test_s3_path():
    bucket = "transfer"
    assert pf.s3_findings(node(), vpc(routes=[to_nat()]), REGION, bucket, REGION) == []
    endpoints_only = vpc(nats=[], endpoints=SSM_ENDPOINTS)
    [item] = pf.s3_findings(node(), endpoints_only, REGION, bucket, REGION)
    assert item["code"] == "NO_S3_PATH" and item["severity"] == "warning"
    assert f"--route-table-ids {TABLE}" in item["fix"]
    gateway = vpc(nats=[], endpoints=SSM_ENDPOINTS + [endpoint("s3", kind="Gateway", route_tables=[TABLE])])
    assert pf.s3_findings(node(), gateway, REGION, bucket, REGION) == []
    # a gateway endpoint on another table does not help
    elsewhere = vpc(nats=[], endpoints=SSM_ENDPOINTS + [endpoint("s3", kind="Gateway", route_tables=["rtb-x"])])
    assert codes(pf.s3_findings(node(), elsewhere, REGION, bucket, REGION)) == ["NO_S3_PATH"]
    # an S3 interface endpoint with private DNS
    interface = vpc(nats=[], endpoints=SSM_ENDPOINTS + [endpoint("s3")])
    assert pf.s3_findings(node(), interface, REGION, bucket, REGION) == []
    # a bucket in another region is not served by the VPC's endpoints
    [other] = pf.s3_findings(node(), gateway, REGION, bucket, "eu-west-1")
    assert "eu-west-1" in other["message"]


# --- caller simulation ------------------------------------------------------------------------------------


def test_decisions_from_plain_and_resource_specific_results():
    plain = [{"EvalActionName": "ssm:StartSession", "EvalResourceName": ARN, "EvalDecision": "implicitDeny",
              "MatchedStatements": [], "MissingContextValues": ["ssm:resourceTag/Env"]}]
    assert pf.decisions(plain) == {ARN: {"decision": "implicitDeny", "matched": [],
                                         "missing_context": ["ssm:resourceTag/Env"]}}
    specific = [{"EvalActionName": "ssm:StartSession", "EvalResourceName": "*", "EvalDecision": "allowed",
                 "MatchedStatements": [{"SourcePolicyId": "ops"}],
                 "ResourceSpecificResults": [{"EvalResourceName": ARN, "EvalResourceDecision": "explicitDeny",
                                              "MatchedStatements": [{"SourcePolicyId": "deny-prod"}]}]}]
    assert pf.decisions(specific)[ARN]["decision"] == "explicitDeny"
    assert pf.decisions(specific)[ARN]["matched"] == ["deny-prod"]


def test_caller_findings():
    caller = "arn:aws:iam::123456789012:user/alice"
    assert pf.caller_findings(NODE, ARN, {"decision": "allowed"}, caller, {}) == []
    assert pf.caller_findings(NODE, ARN, None, caller, {}) == []
    [denied] = pf.caller_findings(NODE, ARN, {"decision": "explicitDeny", "matched": ["deny-prod"]}, caller,
                                  {"Env": "prod"})
    assert denied["code"] == "CALLER_ACCESS_DENIED" and "AccessDeniedException" in denied["message"]
    assert "Env=prod" in denied["message"] and "deny-prod" in denied["fix"]
    [implicit] = pf.caller_findings(NODE, ARN, {"decision": "implicitDeny", "matched": []}, caller, {})
    assert "operator_access" in implicit["fix"] and "remove the Deny" not in implicit["fix"]
    doc = pf.document_arn("SSM-SessionManagerRunShell", "aws", REGION, "123456789012")
    assert codes(pf.document_findings("SSM-SessionManagerRunShell", doc, {"decision": "implicitDeny"}, caller)) == [
        "CALLER_DOCUMENT_DENIED"]


# --- controller -------------------------------------------------------------------------------------------


def test_plugin_findings():
    [missing] = pf.plugin_findings({"path": None, "looked": "/usr/local/bin/session-manager-plugin, then PATH"})
    assert missing["code"] == "PLUGIN_NOT_FOUND" and "SessionManagerPlugin is not found" in missing["message"]
    assert codes(pf.plugin_findings({"path": "/p", "version": None, "error": "exit 1"})) == ["PLUGIN_VERSION_UNKNOWN"]
    assert pf.plugin_findings({"path": "/p", "version": "1.2.707.0"}) == []


def test_bucket_findings():
    assert pf.bucket_findings(None, {}) == []
    assert pf.bucket_findings("b", {"exists": True}) == []
    assert codes(pf.bucket_findings("b", {"exists": False})) == ["TRANSFER_BUCKET_NOT_FOUND"]
    assert codes(pf.bucket_findings("b", {"exists": None, "error": "403"})) == ["TRANSFER_BUCKET_NOT_CHECKED"]


# --- summary ----------------------------------------------------------------------------------------------


def test_summary_and_failure():
    error = pf.finding("NAT_ROUTE_MISSING", "m.", "f.")
    warning = pf.finding("NO_S3_PATH", "m.", "f.")
    nodes = [pf.node_result("i-1", "ec2", "Online", []),
             pf.node_result("i-2", "ec2", None, [error, warning]),
             pf.node_result("i-3", "ec2", "Online", [warning])]
    assert nodes[1]["ping_status"] == "NotRegistered" and nodes[1]["online"] is False
    summary = pf.summarise(nodes, [pf.finding("PLUGIN_NOT_FOUND", "m.", "f.")])
    assert summary == {"nodes": 3, "online": 2, "nodes_ok": 1, "nodes_with_findings": 2, "errors": 2, "warnings": 2,
                       "controller_findings": 1,
                       "by_code": {"NAT_ROUTE_MISSING": 1, "NO_S3_PATH": 2, "PLUGIN_NOT_FOUND": 1}}
    assert pf.should_fail(nodes, [], False)
    assert not pf.should_fail([nodes[0], nodes[2]], [], False)
    assert pf.should_fail([nodes[0], nodes[2]], [], True)
    assert "3 finding(s) (errors and warnings)" in pf.failure_message(summary, True) or \
        "finding(s) (errors and warnings)" in pf.failure_message(summary, True)


# --- the facts the module hands to the network checks ---------------------------------------------------


PRIMARY_NIC_INSTANCE = {
    "InstanceId": "i-0123456789abcdef0",
    "SubnetId": "subnet-1",
    "VpcId": "vpc-1",
    "Placement": {"AvailabilityZone": "us-east-1a"},
    "PrivateIpAddress": "10.0.1.10",
    "SecurityGroups": [{"GroupId": "sg-a", "GroupName": "a"}],
    "NetworkInterfaces": [
        {"Attachment": {"DeviceIndex": 0}, "Groups": [{"GroupId": "sg-a"}, {"GroupId": "sg-b"}]},
        {"Attachment": {"DeviceIndex": 1}, "Groups": [{"GroupId": "sg-other-nic"}]},
    ],
}


def test_network_facts_take_the_primary_interface_groups():
    assert pf.network_facts(PRIMARY_NIC_INSTANCE) == {
        "id": "i-0123456789abcdef0", "subnet_id": "subnet-1", "vpc_id": "vpc-1", "az": "us-east-1a",
        "private_ip": "10.0.1.10", "public_ip": None, "group_ids": ["sg-a", "sg-b"],
    }
