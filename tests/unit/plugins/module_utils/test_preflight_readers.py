"""The readers of bastionless.ssm.ssm_preflight (module_utils/_preflight_readers.py): error texts, batching, and
what each reader makes of the AWS answers, with botocore's Stubber or small fake clients standing in for AWS."""

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight as pf
from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight_readers as readers


@pytest.mark.parametrize("items, size, expected", [
    ([], 2, []),
    (["a", "b", "c"], 2, [["a", "b"], ["c"]]),
    (["a"] * 101, 100, [["a"] * 100, ["a"]]),
])
def test_chunks(items, size, expected):
    assert list(readers.chunks(items, size)) == expected


def test_error_text_and_code_of_aws_errors():
    error = ClientError({"Error": {"Code": "AccessDenied", "Message": "not you"}}, "SimulatePrincipalPolicy")
    wrapped = readers.PreflightError(message="Failed to simulate", exception=error)
    assert readers.error_text(error) == readers.error_text(wrapped) == "AccessDenied: not you"
    assert readers.error_code(wrapped) == "AccessDenied"
    assert readers.error_code(ValueError("x")) is None
    assert readers.error_text(ValueError("bad")) == "ValueError: bad"


class FakeIam:
    """An IAM client answering from dicts and counting calls (the reader's caching is what is tested)."""

    def __init__(self, profiles, roles, inline=None, attached=None, policies=None):
        self.profiles, self.roles = profiles, roles
        self.inline, self.attached, self.policies = inline or {}, attached or {}, policies or {}
        self.calls = []

    def _missing(self, operation):
        return ClientError({"Error": {"Code": "NoSuchEntity", "Message": "no"}}, operation)

    def get_instance_profile(self, InstanceProfileName):
        self.calls.append(("get_instance_profile", InstanceProfileName))
        if InstanceProfileName not in self.profiles:
            raise self._missing("GetInstanceProfile")
        return {"InstanceProfile": self.profiles[InstanceProfileName]}

    def get_role(self, RoleName):
        self.calls.append(("get_role", RoleName))
        if RoleName not in self.roles:
            raise self._missing("GetRole")
        return {"Role": self.roles[RoleName]}

    def get_role_policy(self, RoleName, PolicyName):
        self.calls.append(("get_role_policy", PolicyName))
        return {"PolicyDocument": self.inline[RoleName][PolicyName]}

    def get_policy(self, PolicyArn):
        self.calls.append(("get_policy", PolicyArn))
        return {"Policy": {"DefaultVersionId": "v1"}}

    def get_policy_version(self, PolicyArn, VersionId):
        return {"PolicyVersion": {"Document": self.policies[PolicyArn]}}

    def get_paginator(self, name):
        iam = self

        class Pages:
            def __init__(self, result):
                self.result = result

            def build_full_result(self):
                return self.result

        class Paginator:
            def paginate(self, RoleName):
                iam.calls.append((name, RoleName))
                if name == "list_role_policies":
                    return Pages({"PolicyNames": list(iam.inline.get(RoleName, {}))})
                return Pages({"AttachedPolicies": [{"PolicyArn": a} for a in iam.attached.get(RoleName, [])]})

        return Paginator()


PROFILE_ARN = "arn:aws:iam::123456789012:instance-profile/node"
CUSTOM = "arn:aws:iam::123456789012:policy/custom"


def reader():
    iam = FakeIam(
        profiles={"node": {"Arn": PROFILE_ARN, "InstanceProfileId": "AIPAOLD", "Roles": [{"RoleName": "node"}]}},
        roles={"node": {"RoleName": "node", "Arn": "arn:aws:iam::123456789012:role/node",
                        "AssumeRolePolicyDocument": {"Statement": []}}},
        inline={"node": {"extra": {"Statement": []}}},
        attached={"node": ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", CUSTOM]},
        policies={CUSTOM: {"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}},
    )
    return iam, readers.IamReader(iam)


def test_each_profile_role_and_policy_is_read_once_for_any_number_of_nodes():
    iam, iam_reader = reader()
    for _attempt in range(3):
        profile = iam_reader.profile({"Arn": PROFILE_ARN, "Id": "iip-assoc-123"})
    assert profile["found"] is True and profile["role"]["name"] == "node"
    # the AWS managed core policy is known, not read; the customer one is read once
    assert [c for c in iam.calls if c[0] == "get_policy"] == [("get_policy", CUSTOM)]
    assert sorted(c[0] for c in iam.calls) == ["get_instance_profile", "get_policy", "get_role", "get_role_policy",
                                               "list_attached_role_policies", "list_role_policies"]
    assert len(profile["role"]["documents"]) == 3


def test_a_recreated_profile_is_not_the_attached_one():
    _iam, iam_reader = reader()
    assert iam_reader.profile({"Arn": PROFILE_ARN, "Id": "AIPAOLD"})["found"] is True
    assert iam_reader.profile({"Arn": PROFILE_ARN, "Id": "AIPANEW"})["found"] is False


def test_missing_profile_and_unreadable_role():
    iam, iam_reader = reader()
    gone = "arn:aws:iam::123456789012:instance-profile/gone"
    assert iam_reader.profile({"Arn": gone}) == {"arn": gone, "found": False}
    assert iam_reader.role("nobody") is None

    def denied(RoleName):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRole")

    iam.get_role = denied
    assert iam_reader.role("other") == {"name": "other", "error": "AccessDenied: no"}


# --- the readers against botocore's Stubber -------------------------------------------------------------

VPC = "vpc-0a1b2c3d"
ACCOUNT = "123456789012"


def stubbed(service):
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return client, Stubber(client)


def instance(instance_id, state="running"):
    return {"InstanceId": instance_id, "State": {"Name": state}}


def test_select_instances_keeps_listed_ids_in_any_state_and_sorts_them():
    ec2, stub = stubbed("ec2")
    ids = ["i-0000000000000000b", "i-0000000000000000a", "i-0000000000000000b"]
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [
        instance("i-0000000000000000b", "terminated"), instance("i-0000000000000000a")]}]},
        {"Filters": [{"Name": "tag:role", "Values": ["web"]},
                     {"Name": "instance-id", "Values": ["i-0000000000000000a", "i-0000000000000000b"]}]})
    with stub:
        found = readers.select_instances(ec2, ids, {"tag:role": "web"})
    stub.assert_no_pending_responses()
    assert [i["InstanceId"] for i in found] == ["i-0000000000000000a", "i-0000000000000000b"]


def test_select_instances_by_filters_leaves_out_terminated_and_shutting_down():
    ec2, stub = stubbed("ec2")
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [
        instance("i-0000000000000000c", "terminated"), instance("i-0000000000000000d", "shutting-down"),
        instance("i-0000000000000000e", "stopped")]}]}, {"Filters": [{"Name": "tag:role", "Values": ["web"]}]})
    with stub:
        found = readers.select_instances(ec2, [], {"tag:role": "web"})
    assert [i["InstanceId"] for i in found] == ["i-0000000000000000e"]


def test_read_instance_information_asks_in_chunks_of_fifty():
    ssm, stub = stubbed("ssm")
    ids = [f"i-{n:017x}" for n in range(51)]
    for chunk in (ids[:50], ids[50:]):
        stub.add_response("describe_instance_information",
                          {"InstanceInformationList": [{"InstanceId": i, "PingStatus": "Online"} for i in chunk]},
                          {"Filters": [{"Key": "InstanceIds", "Values": chunk}], "MaxResults": 50})
    with stub:
        rows = readers.read_instance_information(ssm, list(reversed(ids)))
    stub.assert_no_pending_responses()
    assert sorted(rows) == ids and rows[ids[0]]["PingStatus"] == "Online"


def vpc_responses(stub, default_group=True):
    by_vpc = [{"Name": "vpc-id", "Values": [VPC]}]
    stub.add_response("describe_route_tables", {"RouteTables": [{"RouteTableId": "rtb-1", "VpcId": VPC}]},
                      {"Filters": by_vpc})
    stub.add_response("describe_nat_gateways", {"NatGateways": [
        {"NatGatewayId": "nat-1", "VpcId": VPC}, {"NatGatewayId": "nat-other", "VpcId": "vpc-other"}]},
        {"Filter": by_vpc})
    stub.add_response("describe_internet_gateways", {"InternetGateways": [
        {"InternetGatewayId": "igw-1", "Attachments": [{"VpcId": VPC, "State": "available"}]}]},
        {"Filters": [{"Name": "attachment.vpc-id", "Values": [VPC]}]})
    stub.add_response("describe_vpc_endpoints", {"VpcEndpoints": [{"VpcEndpointId": "vpce-1", "VpcId": VPC}]},
                      {"Filters": by_vpc})
    stub.add_response("describe_subnets", {"Subnets": [{"SubnetId": "subnet-1", "VpcId": VPC}]}, {"Filters": by_vpc})
    groups = [{"GroupId": "sg-1", "GroupName": "default" if default_group else "web", "VpcId": VPC}]
    stub.add_response("describe_security_groups", {"SecurityGroups": groups}, {"Filters": by_vpc})


def test_read_vpcs_gathers_each_vpc_resources():
    ec2, stub = stubbed("ec2")
    vpc_responses(stub)
    stub.add_response("describe_vpc_attribute", {"VpcId": VPC, "EnableDnsSupport": {"Value": True}},
                      {"VpcId": VPC, "Attribute": "enableDnsSupport"})
    stub.add_response("describe_vpc_attribute", {"VpcId": VPC, "EnableDnsHostnames": {"Value": False}},
                      {"VpcId": VPC, "Attribute": "enableDnsHostnames"})
    with stub:
        vpc = readers.read_vpcs(ec2, [VPC])[VPC]
    stub.assert_no_pending_responses()
    assert [t["RouteTableId"] for t in vpc["route_tables"]] == ["rtb-1"]
    assert [n["NatGatewayId"] for n in vpc["nat_gateways"]] == ["nat-1"]
    assert [g["InternetGatewayId"] for g in vpc["internet_gateways"]] == ["igw-1"]
    assert [e["VpcEndpointId"] for e in vpc["endpoints"]] == ["vpce-1"]
    assert list(vpc["subnets"]) == ["subnet-1"] and list(vpc["security_groups"]) == ["sg-1"]
    assert vpc["default_group_id"] == "sg-1"
    assert (vpc["dns_support"], vpc["dns_hostnames"]) == (True, False)


def test_read_vpcs_turns_a_denied_read_into_an_error_for_each_vpc():
    ec2, stub = stubbed("ec2")
    stub.add_client_error("describe_route_tables", service_error_code="UnauthorizedOperation",
                          service_message="not allowed", http_status_code=403)
    with stub:
        vpcs = readers.read_vpcs(ec2, [VPC, "vpc-0f0f0f0f"])
    assert vpcs == {VPC: {"id": VPC, "error": "UnauthorizedOperation: not allowed"},
                    "vpc-0f0f0f0f": {"id": "vpc-0f0f0f0f", "error": "UnauthorizedOperation: not allowed"}}


DHMC_ROLE = "arn:aws:iam::123456789012:role/service-role/dhmc"


@pytest.mark.parametrize("value, expected", [
    ("$None", {"enabled": False, "value": "$None"}),
    (None, {"enabled": False, "value": None}),
    (DHMC_ROLE, {"enabled": True, "value": DHMC_ROLE, "role": None}),
])
def test_read_dhmc(value, expected):
    ssm, stub = stubbed("ssm")
    setting = {"SettingId": pf.DHMC_SETTING} if value is None else {"SettingId": pf.DHMC_SETTING, "SettingValue": value}
    stub.add_response("get_service_setting", {"ServiceSetting": setting}, {"SettingId": pf.DHMC_SETTING})
    iam = FakeIam(profiles={}, roles={})
    with stub:
        assert readers.read_dhmc(ssm, readers.IamReader(iam)) == expected
    assert iam.calls == ([("get_role", "dhmc")] if expected["enabled"] else [])


def test_read_dhmc_unreadable_setting_or_role():
    ssm, stub = stubbed("ssm")
    stub.add_client_error("get_service_setting", service_error_code="AccessDeniedException", service_message="no")
    with stub:
        assert readers.read_dhmc(ssm, readers.IamReader(FakeIam({}, {}))) == {"error": "AccessDeniedException: no"}
    ssm, stub = stubbed("ssm")
    stub.add_response("get_service_setting", {"ServiceSetting": {"SettingValue": DHMC_ROLE}})
    iam = FakeIam({}, {})

    def denied(RoleName):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRole")

    iam.get_role = denied
    with stub:
        assert readers.read_dhmc(ssm, readers.IamReader(iam)) == {"error": "AccessDenied: no"}


def test_read_bucket_found_with_its_region():
    s3, stub = stubbed("s3")
    stub.add_response("head_bucket", {"BucketRegion": "eu-west-1"}, {"Bucket": "transfer"})
    with stub:
        assert readers.read_bucket(s3, "transfer") == {"name": "transfer", "exists": True, "region": "eu-west-1"}


@pytest.mark.parametrize("code, status, headers, expected", [
    ("404", 404, {}, {"exists": False, "region": None}),
    ("301", 301, {"x-amz-bucket-region": "eu-west-1"}, {"exists": True, "region": "eu-west-1"}),
    ("403", 403, {"x-amz-bucket-region": "us-east-1"},
     {"exists": None, "region": "us-east-1", "error": "403: Forbidden"}),
])
def test_read_bucket_errors(code, status, headers, expected):
    s3, stub = stubbed("s3")
    stub.add_client_error("head_bucket", service_error_code=code, service_message="Forbidden" if code == "403" else "",
                          http_status_code=status, response_meta={"HTTPHeaders": headers})
    with stub:
        assert readers.read_bucket(s3, "transfer") == {"name": "transfer", **expected}


NODE_A, NODE_B = "i-0000000000000000a", "i-0000000000000000b"
USER = f"arn:aws:iam::{ACCOUNT}:user/alice"


def arn_of(node_id):
    return pf.node_arn(node_id, "aws", "us-east-1", ACCOUNT)


def evaluation(resource, decision, missing=()):
    return {"EvalActionName": "ssm:StartSession", "EvalResourceName": resource, "EvalDecision": decision,
            "MissingContextValues": list(missing)}


def simulate_args(resources, context=None):
    args = {"PolicySourceArn": USER, "ActionNames": ["ssm:StartSession"], "ResourceArns": resources}
    if context:
        args["ContextEntries"] = context
    return args


def test_simulate_caller_groups_nodes_by_the_tag_values_the_policies_look_at():
    iam, stub = stubbed("iam")
    targets = {NODE_A: {"arn": arn_of(NODE_A), "tags": {"Team": "red", "Name": "a"}},
               NODE_B: {"arn": arn_of(NODE_B), "tags": {"Name": "b"}}}
    # the first pass tells which tag keys matter (Team); only NODE_A has one, so only it is simulated again
    stub.add_response("simulate_principal_policy", {"EvaluationResults": [
        evaluation(arn_of(NODE_A), "implicitDeny", ["ssm:resourceTag/Team"]),
        evaluation(arn_of(NODE_B), "implicitDeny", ["ssm:resourceTag/Team"])]},
        simulate_args([arn_of(NODE_A), arn_of(NODE_B)]))
    stub.add_response("simulate_principal_policy", {"EvaluationResults": [evaluation(arn_of(NODE_A), "allowed")]},
                      simulate_args([arn_of(NODE_A)], pf.context_entries({"Team": "red"})))
    document = pf.document_arn("SSM-SessionManagerRunShell", "aws", "us-east-1", ACCOUNT)
    stub.add_response("simulate_principal_policy", {"EvaluationResults": [evaluation(document, "allowed")]},
                      simulate_args([document]))
    with stub:
        result = readers.simulate_caller(iam, USER, "aws", "us-east-1", ACCOUNT, "SSM-SessionManagerRunShell",
                                         targets)
    stub.assert_no_pending_responses()
    assert result["status"] == "simulated" and result["principal_arn"] == USER
    assert {n: d["decision"] for n, d in result["decisions"].items()} == {NODE_A: "allowed", NODE_B: "implicitDeny"}
    assert result["document"]["decision"]["decision"] == "allowed"


def test_simulate_caller_says_why_it_could_not_simulate():
    iam, stub = stubbed("iam")
    stub.add_client_error("simulate_principal_policy", service_error_code="AccessDenied", service_message="no",
                          http_status_code=403)
    targets = {NODE_A: {"arn": arn_of(NODE_A), "tags": {}}}
    with stub:
        result = readers.simulate_caller(iam, USER, "aws", "us-east-1", ACCOUNT, "SSM-SessionManagerRunShell",
                                         targets)
    assert result["status"] == "not_simulated" and result["decisions"] == {}
    assert result["reason"] == f"the caller may not iam:SimulatePrincipalPolicy on {USER} (AccessDenied: no)"


def test_simulate_caller_as_a_role_that_iam_does_not_know():
    iam, stub = stubbed("iam")
    stub.add_client_error("get_role", service_error_code="NoSuchEntity", service_message="gone", http_status_code=404)
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/operator/alice"
    with stub:
        result = readers.simulate_caller(iam, caller, "aws", "us-east-1", ACCOUNT, "SSM-SessionManagerRunShell",
                                         {NODE_A: {"arn": arn_of(NODE_A), "tags": {}}})
    assert result["status"] == "not_simulated" and result["principal_arn"] is None
    assert result["reason"] == "the caller's role operator does not exist in IAM"


class RunCommand:
    def __init__(self, rc, out, err=""):
        self.answer, self.argv = (rc, out, err), None

    def run_command(self, argv):
        self.argv = argv
        return self.answer


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "session-manager-plugin"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_find_plugin_reports_its_version(plugin):
    module = RunCommand(0, "1.2.707.0\n")
    assert readers.find_plugin(module, plugin) == {"found": True, "path": plugin, "version": "1.2.707.0",
                                                   "looked": f"the plugin option: {plugin}"}
    assert module.argv == [plugin, "--version"]


def test_find_plugin_whose_version_cannot_be_read(plugin):
    found = readers.find_plugin(RunCommand(1, "", "boom"), plugin)
    assert found["found"] is True and found["version"] is None and found["error"] == "exit 1: boom"


def test_find_plugin_not_found(tmp_path):
    missing = str(tmp_path / "nowhere")
    module = RunCommand(0, "never run")
    assert readers.find_plugin(module, missing)["found"] is False
    assert module.argv is None
