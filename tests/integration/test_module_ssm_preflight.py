"""bastionless.ssm.ssm_preflight against labs, through ansible-playbook: each prerequisite is broken in turn, the
finding names it with its fix, and applying the fix (with the ids the finding gives) brings the node back Online;
and every row of the operator guide's symptom table (TargetNotConnected, AccessDeniedException,
SessionManagerPlugin is not found, a session that opens but cannot install packages) is named.

Two labs, each for the tests of one part, which build on each other in order:
- ``online_lab``: two provisioned EC2 nodes (NAT path, instance profile) and a hybrid node, all Online at first.
  Each test breaks something, checks, fixes it, and leaves the lab Online again.
- ``bare_lab``: one unprovisioned node (no profile, no route): never registered, then the endpoint path walk, the
  S3 path, and a NAT gateway the route table does not use.
"""

import ast
import json
import os
import re
import urllib.request

import pytest
from ansible_cli import ROOT, call_module, call_module_cases, run
from botocore.exceptions import ClientError
from roles_helpers import finished_command
from ssm_lab.harness.testing import running_lab, wait_until

MODULE = "bastionless.ssm.ssm_preflight"
CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
DHMC_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy"
DHMC_SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"
LAB_ROLE = "ssm-lab-node"
BUCKET = "preflight-transfer"
VPC_CIDR = "10.42.0.0/16"
HTTPS_FROM_VPC = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": VPC_CIDR}]}


def trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


# --- running the module ------------------------------------------------------------------------------------


def preflight(lab, tmp_path, args: dict, *flags: str, fails: bool = False, drop_env=(), **env):
    """Run the module once in a playbook on localhost (``drop_env``: lab variables to leave out of its environment,
    ``env``: more); return its registered result."""
    result, output, _recap = call_module(lab, tmp_path, MODULE, args, *flags, fails=fails, env=env, unset=drop_env)
    assert result.get("changed", False) is False, output[-6000:]  # the module only reads
    return result


def node_of(result: dict, node_id: str) -> dict:
    [node] = [n for n in result["nodes"] if n["instance_id"] == node_id]
    return node


def codes(node: dict) -> list:
    return [f["code"] for f in node["findings"]]


def finding(node: dict, code: str) -> dict:
    found = [f for f in node["findings"] if f["code"] == code]
    assert found, f"{code} not in {codes(node)}: {node}"
    return found[0]


# --- the lab -----------------------------------------------------------------------------------------------


def ping_status(lab, node_id: str):
    rows = lab.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [node_id]}])["InstanceInformationList"]
    return rows[0]["PingStatus"] if rows else None


def wait_online(lab, *node_ids: str) -> None:
    for node_id in node_ids:
        wait_until(lambda n=node_id: ping_status(lab, n) == "Online", timeout=40, interval=0.5,
                   what=f"{node_id} to be Online")


def wait_offline(lab, node_id: str) -> None:
    wait_until(lambda: ping_status(lab, node_id) != "Online", timeout=40, interval=0.5,
               what=f"{node_id} to leave Online")


def assert_target_not_connected(lab, node_id: str) -> None:
    """The symptom: a session to the node fails with TargetNotConnected."""
    with pytest.raises(ClientError) as raised:
        lab.client("ssm").start_session(Target=node_id)
    assert raised.value.response["Error"]["Code"] == "TargetNotConnected"


def ec2_ids(lab) -> list:
    return [n for n in lab.network["nodes"] if n.startswith("i-")]


def hybrid_ids(lab) -> list:
    return [n for n in lab.network["nodes"] if n.startswith("mi-")]


def association_of(lab, node_id: str):
    found = lab.client("ec2").describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [node_id]}])["IamInstanceProfileAssociations"]
    return next((a for a in found if a["State"] == "associated"), None)


# =========================================================================================================
# A provisioned lab: every prerequisite broken in turn, and fixed
# =========================================================================================================


@pytest.fixture(scope="module")
def online_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--hybrid", "1", "--provisioned") as lab:
        lab.client("s3").create_bucket(Bucket=BUCKET)
        wait_online(lab, *lab.network["nodes"])
        yield lab


def test_all_online_nothing_found_and_the_controller_described(online_lab, tmp_path):
    lab = online_lab
    [hybrid] = hybrid_ids(lab)
    args = {"filters": {"tag:ssm-lab": "node"}, "instance_ids": [hybrid], "transfer_bucket": BUCKET}
    args["instance_ids"] = ec2_ids(lab) + [hybrid]
    for flags in ((), ("--check",)):
        result = preflight(lab, tmp_path, args, *flags)
        assert [n["instance_id"] for n in result["nodes"]] == sorted(lab.network["nodes"])
        for node in result["nodes"]:
            assert node["ping_status"] == "Online" and node["online"] is True and node["findings"] == [], node
            assert node["agent_version"] and node["last_ping"]
        assert {n["kind"] for n in result["nodes"]} == {"ec2", "hybrid"}
        assert node_of(result, ec2_ids(lab)[0])["name"] == "lab-node-1"
        controller = result["controller"]
        assert controller["plugin"]["found"] is True
        assert controller["plugin"]["path"] == lab.env["AWS_SESSION_MANAGER_PLUGIN"]
        assert controller["plugin"]["version"] == "1.2.707.0"
        assert controller["caller"]["arn"].endswith(":user/moto")
        assert controller["transfer_bucket"] == {"name": BUCKET, "exists": True, "region": "us-east-1"}
        # The lab's default credentials are no IAM principal: the simulation cannot run, and says why.
        assert controller["simulation"]["status"] == "not_simulated"
        assert "NoSuchEntity" in controller["simulation"]["reason"]
        assert [f["code"] for f in controller["findings"]] == ["SIMULATION_UNAVAILABLE"]
        assert result["summary"] == {"nodes": 3, "online": 3, "nodes_ok": 3, "nodes_with_findings": 0, "errors": 0,
                                     "warnings": 1, "controller_findings": 1,
                                     "by_code": {"SIMULATION_UNAVAILABLE": 1}}


def test_the_examples_run_in_the_lab(online_lab, tmp_path):
    """The module's EXAMPLES, as one play with the lab inventory: every node is fine, so fail_on_findings passes."""
    with open(os.path.join(ROOT, "plugins", "modules", "ssm_preflight.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    examples = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", None) == "EXAMPLES")
    tasks = "\n".join("    " + line if line else line for line in examples.splitlines())
    path = tmp_path / "examples.yml"
    path.write_text("- name: The examples of bastionless.ssm.ssm_preflight\n  hosts: localhost\n  connection: local\n"
                    "  gather_facts: false\n  tasks:\n" + tasks + "\n", encoding="utf-8")
    output, recap = run(online_lab, "ansible-playbook", "-i", "inventories/lab", str(path),
                        "-e", f"bastionless_transfer_bucket={BUCKET}")
    assert recap["localhost"] == {"ok": 4, "changed": 0, "unreachable": 0, "failed": 0}, output
    assert output.count(" Online: []") == 2, output  # the loop shows each node with its (empty) codes


def test_api_calls_do_not_grow_with_the_nodes(online_lab, tmp_path):
    """One DescribeInstances, one DescribeInstanceInformation, the VPC read once, the shared profile and role
    read once: the same calls for one node as for both."""
    lab = online_lab
    counted = {}
    for label, ids in (("one", ec2_ids(lab)[:1]), ("both", ec2_ids(lab))):
        urllib.request.urlopen(urllib.request.Request(f"{lab.endpoint}/_lab/calls", method="DELETE"), timeout=10)
        preflight(lab, tmp_path, {"instance_ids": ids, "check_caller": False})
        with urllib.request.urlopen(f"{lab.endpoint}/_lab/calls", timeout=10) as response:
            calls = json.load(response)["calls"]
        counted[label] = {k: v for k, v in calls.items() if k.split(":")[0] in ("ec2", "ssm", "iam")}
    assert counted["one"] == counted["both"], counted
    assert counted["both"]["ec2:DescribeInstances"] == 1
    assert counted["both"]["ssm:DescribeInstanceInformation"] == 1
    assert counted["both"]["iam:GetInstanceProfile"] == 1
    print("\npreflight API calls for 1 and for 2 nodes:", sum(counted["one"].values()), sum(counted["both"].values()))


def test_agent_connection_lost_since_a_time_then_restarted(online_lab, tmp_path):
    lab = online_lab
    node = ec2_ids(lab)[0]
    [hybrid] = hybrid_ids(lab)
    for target in (node, hybrid):
        lab.cli("agent", "stop", target)
        wait_offline(lab, target)
    assert_target_not_connected(lab, node)
    result = preflight(lab, tmp_path, {"instance_ids": [node, hybrid]})
    for target in (node, hybrid):
        listed = node_of(result, target)
        assert listed["ping_status"] == "ConnectionLost" and codes(listed) == ["AGENT_CONNECTION_LOST"]
        lost = finding(listed, "AGENT_CONNECTION_LOST")
        assert lost["resources"]["last_ping"] == listed["last_ping"] and listed["last_ping"] in lost["message"]
        assert "ago" in lost["message"]
    assert "restart amazon-ssm-agent" in finding(node_of(result, node), "AGENT_CONNECTION_LOST")["fix"]
    assert "Restart the agent on the server" in finding(node_of(result, hybrid), "AGENT_CONNECTION_LOST")["fix"]
    assert result["summary"]["online"] == 0 and result["summary"]["errors"] == 2

    for target in (node, hybrid):  # the fix: restart the agent
        lab.cli("agent", "start", target)
    wait_online(lab, node, hybrid)
    result = preflight(lab, tmp_path, {"instance_ids": [node, hybrid]})
    assert [codes(n) for n in result["nodes"]] == [[], []]


def test_role_without_the_managed_policy_or_an_equivalent(online_lab, tmp_path):
    lab = online_lab
    iam = lab.client("iam")
    node, other = ec2_ids(lab)
    iam.detach_role_policy(RoleName=LAB_ROLE, PolicyArn=CORE_POLICY)
    wait_offline(lab, node)
    assert_target_not_connected(lab, node)
    result = preflight(lab, tmp_path, {"instance_ids": [node, other]})
    listed = node_of(result, node)
    assert codes(listed) == ["AGENT_CONNECTION_LOST", "ROLE_MISSING_PERMISSIONS"]
    missing = finding(listed, "ROLE_MISSING_PERMISSIONS")
    assert missing["resources"]["role"] == LAB_ROLE
    assert missing["resources"]["missing_actions"][0] == "ssm:UpdateInstanceInformation"
    assert f"--role-name {LAB_ROLE} --policy-arn {CORE_POLICY}" in missing["fix"]
    assert "other findings" in finding(listed, "AGENT_CONNECTION_LOST")["fix"]
    assert "ROLE_MISSING_PERMISSIONS" in codes(node_of(result, other))  # the same role

    # An equivalent inline policy is as good as the managed one.
    iam.put_role_policy(RoleName=LAB_ROLE, PolicyName="core-equivalent", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["ssm:UpdateInstanceInformation", "ssmmessages:*", "ec2messages:*"],
             "Resource": "*"}]}))
    wait_online(lab, node, other)
    assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []
    iam.delete_role_policy(RoleName=LAB_ROLE, PolicyName="core-equivalent")
    wait_offline(lab, node)

    iam.attach_role_policy(RoleName=missing["resources"]["role"], PolicyArn=CORE_POLICY)  # the fix
    wait_online(lab, node, other)
    assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []


def test_a_wrong_trust_policy(online_lab, tmp_path):
    lab = online_lab
    iam = lab.client("iam")
    node, other = ec2_ids(lab)
    iam.update_assume_role_policy(RoleName=LAB_ROLE, PolicyDocument=trust("lambda.amazonaws.com"))
    wait_offline(lab, node)
    assert_target_not_connected(lab, node)
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert codes(listed) == ["AGENT_CONNECTION_LOST", "ROLE_TRUST_POLICY"]
    wrong = finding(listed, "ROLE_TRUST_POLICY")
    assert "ec2.amazonaws.com" in wrong["message"] and "update-assume-role-policy" in wrong["fix"]

    iam.update_assume_role_policy(RoleName=wrong["resources"]["role"], PolicyDocument=trust("ec2.amazonaws.com"))
    wait_online(lab, node, other)
    assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []


def test_a_profile_without_its_role(online_lab, tmp_path):
    lab = online_lab
    iam = lab.client("iam")
    node, other = ec2_ids(lab)
    iam.remove_role_from_instance_profile(InstanceProfileName=LAB_ROLE, RoleName=LAB_ROLE)
    wait_offline(lab, node)
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert codes(listed) == ["AGENT_CONNECTION_LOST", "INSTANCE_PROFILE_HAS_NO_ROLE"]
    empty = finding(listed, "INSTANCE_PROFILE_HAS_NO_ROLE")
    assert "add-role-to-instance-profile" in empty["fix"]

    iam.add_role_to_instance_profile(InstanceProfileName=LAB_ROLE, RoleName=LAB_ROLE)
    wait_online(lab, node, other)
    assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []


def test_imds_disabled(online_lab, tmp_path):
    lab = online_lab
    node = ec2_ids(lab)[0]
    ec2 = lab.client("ec2")
    ec2.modify_instance_metadata_options(InstanceId=node, HttpEndpoint="disabled")
    wait_offline(lab, node)
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert codes(listed) == ["AGENT_CONNECTION_LOST", "IMDS_DISABLED"]
    assert "--http-endpoint enabled" in finding(listed, "IMDS_DISABLED")["fix"]
    ec2.modify_instance_metadata_options(InstanceId=node, HttpEndpoint="enabled")
    wait_online(lab, node)


def test_no_profile_then_default_host_management_without_then_with_imdsv2(online_lab, tmp_path):
    lab = online_lab
    ec2, iam, ssm = lab.client("ec2"), lab.client("iam"), lab.client("ssm")
    node = ec2_ids(lab)[0]
    ec2.disassociate_iam_instance_profile(AssociationId=association_of(lab, node)["AssociationId"])
    wait_offline(lab, node)
    assert_target_not_connected(lab, node)
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert codes(listed) == ["AGENT_CONNECTION_LOST", "NO_INSTANCE_PROFILE"]
    none = finding(listed, "NO_INSTANCE_PROFILE")
    assert "instance_profile_association" in none["fix"] and DHMC_SETTING in none["fix"]

    # The fix, one way: Default Host Management. On with IMDSv2 optional, it skips the node.
    role = "AWSSystemsManagerDefaultEC2InstanceManagementRole"
    iam.create_role(RoleName=role, Path="/service-role/", AssumeRolePolicyDocument=trust("ssm.amazonaws.com"))
    iam.attach_role_policy(RoleName=role, PolicyArn=DHMC_POLICY)
    ssm.update_service_setting(SettingId=DHMC_SETTING, SettingValue=f"service-role/{role}")
    try:
        listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
        assert codes(listed) == ["AGENT_CONNECTION_LOST", "DHMC_IMDSV2_NOT_REQUIRED"]
        imds = finding(listed, "DHMC_IMDSV2_NOT_REQUIRED")
        assert "HttpTokens is optional" in imds["message"] and "--http-tokens required" in imds["fix"]
        ec2.modify_instance_metadata_options(InstanceId=node, HttpTokens="required", HttpEndpoint="enabled")
        wait_online(lab, node)
        listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
        assert codes(listed) == [] and listed["online"] is True

        # DHMC's role without its policy
        iam.detach_role_policy(RoleName=role, PolicyArn=DHMC_POLICY)
        wait_offline(lab, node)
        listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
        assert codes(listed) == ["AGENT_CONNECTION_LOST", "DHMC_ROLE_MISSING_PERMISSIONS"]
        assert DHMC_POLICY.rsplit("/", 1)[1] in finding(listed, "DHMC_ROLE_MISSING_PERMISSIONS")["fix"]
        iam.attach_role_policy(RoleName=role, PolicyArn=DHMC_POLICY)
        wait_online(lab, node)
    finally:
        ssm.reset_service_setting(SettingId=DHMC_SETTING)
        if association_of(lab, node) is None:
            ec2.associate_iam_instance_profile(IamInstanceProfile={"Name": LAB_ROLE}, InstanceId=node)
    wait_online(lab, node)
    assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []


def test_the_nat_route_missing_from_the_route_table(online_lab, tmp_path):
    lab = online_lab
    ec2 = lab.client("ec2")
    node, other = ec2_ids(lab)
    table = lab.network["private"][0]["route_table"]
    [nat] = [n["NatGatewayId"] for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] == "available"]
    ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")
    wait_offline(lab, node)
    assert_target_not_connected(lab, node)
    result = preflight(lab, tmp_path, {"instance_ids": [node, other]})
    listed = node_of(result, node)
    assert codes(listed) == ["AGENT_CONNECTION_LOST", "NAT_ROUTE_MISSING"]
    missing = finding(listed, "NAT_ROUTE_MISSING")
    assert missing["severity"] == "error"
    assert missing["resources"]["route_table_id"] == table and missing["resources"]["nat_gateway_id"] == nat
    assert f"create-route --route-table-id {table}" in missing["fix"]
    assert codes(node_of(result, other)) == []  # the other node's table still routes to the NAT

    ec2.create_route(RouteTableId=missing["resources"]["route_table_id"], DestinationCidrBlock="0.0.0.0/0",
                     NatGatewayId=missing["resources"]["nat_gateway_id"])
    wait_online(lab, node)
    assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []


def test_a_nat_gateway_that_is_not_available(online_lab, tmp_path):
    lab = online_lab
    ec2 = lab.client("ec2")
    nodes = ec2_ids(lab)
    [old] = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] == "available"]
    ec2.delete_nat_gateway(NatGatewayId=old["NatGatewayId"])
    for node in nodes:
        wait_offline(lab, node)
    result = preflight(lab, tmp_path, {"instance_ids": nodes})
    for index, node in enumerate(nodes):
        listed = node_of(result, node)
        assert codes(listed) == ["AGENT_CONNECTION_LOST", "NAT_GATEWAY_NOT_AVAILABLE"]
        gone = finding(listed, "NAT_GATEWAY_NOT_AVAILABLE")
        assert gone["resources"]["nat_gateway_id"] == old["NatGatewayId"]
        assert gone["resources"]["route_table_id"] == lab.network["private"][index]["route_table"]
        assert "replace-route" in gone["fix"] and "after creating a NAT gateway" in gone["fix"]

    # The fix: a new NAT gateway, and each finding's route table pointed at it.
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    new = ec2.create_nat_gateway(SubnetId=old["SubnetId"], AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    for node in nodes:
        table = finding(node_of(result, node), "NAT_GATEWAY_NOT_AVAILABLE")["resources"]["route_table_id"]
        ec2.replace_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=new)
    wait_online(lab, *nodes)
    assert [codes(n) for n in preflight(lab, tmp_path, {"instance_ids": nodes})["nodes"]] == [[], []]


def test_the_transfer_bucket_missing(online_lab, tmp_path):
    lab = online_lab
    node = ec2_ids(lab)[0]
    # Four calls in one run: the finding; fail_on_findings fails on it; the simulation's warning alone fails only
    # with fail_on_warnings.
    missing = {"instance_ids": [node], "transfer_bucket": "no-such-transfer"}
    result, failed, passed, warned = call_module_cases(lab, tmp_path, MODULE, [
        missing, {**missing, "fail_on_findings": True}, {"instance_ids": [node], "fail_on_findings": True},
        {"instance_ids": [node], "fail_on_findings": True, "fail_on_warnings": True}]).results
    assert [r.get("failed", False) for r in (result, failed, passed, warned)] == [False, True, False, True]
    assert not any(r.get("changed") for r in (result, failed, passed, warned))  # the module only reads
    [missing] = [f for f in result["controller"]["findings"] if f["code"] == "TRANSFER_BUCKET_NOT_FOUND"]
    assert "HeadBucket" in missing["message"] and "s3_bucket" in missing["fix"]
    assert result["controller"]["transfer_bucket"]["exists"] is False
    # fail_on_findings fails, with the findings still returned
    assert "Preflight found 1 finding(s) (errors)" in failed["msg"]
    assert failed["summary"]["errors"] == 1 and failed["controller"]["findings"]
    # warnings (the simulation) fail only with fail_on_warnings
    assert "(errors and warnings)" in warned["msg"]


def aws_ssm_ping(lab, node: str, plugin: str):
    """ansible.builtin.ping over the real amazon.aws.aws_ssm connection with the given plugin path."""
    return run(lab, "ansible", "all", "-i", f"{node},", "-c", "amazon.aws.aws_ssm", "-m", "ansible.builtin.ping",
               "-e", f"ansible_aws_ssm_plugin={plugin}", "-e", f"ansible_aws_ssm_bucket_name={BUCKET}",
               "-e", "ansible_aws_ssm_region=us-east-1", "-e", "ansible_python_interpreter=/usr/bin/python3",
               check=False)[0]


def test_session_manager_plugin_not_found(online_lab, tmp_path):
    lab = online_lab
    node = ec2_ids(lab)[0]
    wrong = str(tmp_path / "no" / "session-manager-plugin")
    # The symptom, with the real connection plugin: it cannot find the executable.
    output = aws_ssm_ping(lab, node, wrong)
    assert f"failed to find the executable specified {wrong}" in output

    result = preflight(lab, tmp_path, {"instance_ids": [node], "plugin": wrong})
    [missing] = [f for f in result["controller"]["findings"] if f["code"] == "PLUGIN_NOT_FOUND"]
    assert "SessionManagerPlugin is not found" in missing["message"] and wrong in missing["message"]
    assert "Install the Session Manager plugin" in missing["fix"]
    assert result["controller"]["plugin"]["found"] is False

    # Looked up as aws_ssm does when nothing names it: /usr/local/bin, then PATH.
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not os.path.exists(os.path.join(d, "session-manager-plugin")))
    result = preflight(lab, tmp_path, {"instance_ids": [node]}, drop_env=("AWS_SESSION_MANAGER_PLUGIN",), PATH=path)
    [missing] = [f for f in result["controller"]["findings"] if f["code"] == "PLUGIN_NOT_FOUND"]
    assert "/usr/local/bin/session-manager-plugin, then session-manager-plugin on PATH" in missing["message"]

    # The fix: the plugin where the connection looks; then the connection works.
    plugin = lab.env["AWS_SESSION_MANAGER_PLUGIN"]
    result = preflight(lab, tmp_path, {"instance_ids": [node], "plugin": plugin})
    assert result["controller"]["plugin"] == {"found": True, "path": plugin, "looked": f"the plugin option: {plugin}",
                                              "version": "1.2.707.0"}
    assert "PLUGIN_NOT_FOUND" not in [f["code"] for f in result["controller"]["findings"]]
    assert '"ping": "pong"' in aws_ssm_ping(lab, node, plugin)


def test_access_denied_for_the_caller_by_tag_and_document(online_lab, tmp_path):
    """The AccessDeniedException row: the operator may start sessions on Env=dev nodes only."""
    lab = online_lab
    iam, ec2 = lab.client("iam"), lab.client("ec2")
    dev, prod = ec2_ids(lab)
    ec2.create_tags(Resources=[dev], Tags=[{"Key": "Env", "Value": "dev"}])
    ec2.create_tags(Resources=[prod], Tags=[{"Key": "Env", "Value": "prod"}])
    statements = [
        {"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"StringEquals": {"ssm:resourceTag/Env": "dev"}}},
        {"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "arn:aws:ssm:*:*:document/SSM-SessionManagerRunShell"},
        {"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "arn:aws:iam::*:user/${aws:username}"},
    ]

    def operator(name: str, policies: dict) -> dict:
        """An IAM user with ``policies`` (inline, by name), and the reads the module documents it needs (the lab
        judges the SSM ones), and the preflight arguments that run as that user."""
        iam.create_user(UserName=name)
        reads = [{"Effect": "Allow", "Resource": "*", "Action": [
            "ec2:Describe*", "ssm:DescribeInstanceInformation", "ssm:GetServiceSetting", "ssm:ListTagsForResource",
            "iam:GetInstanceProfile", "iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy",
            "iam:ListAttachedRolePolicies", "iam:GetPolicy", "iam:GetPolicyVersion"]}]
        for policy, document in {"preflight-reads": reads, **policies}.items():
            iam.put_user_policy(UserName=name, PolicyName=policy,
                                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": document}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"], "instance_ids": [dev, prod]}

    never_prod = [{"Effect": "Deny", "Action": "ssm:StartSession", "Resource": "*",
                   "Condition": {"StringEquals": {"aws:ResourceTag/Env": "prod"}}}]
    # Four callers, one run: allowed on dev nodes only; the same with an explicit Deny of prod; without the
    # document statement; and one that may not simulate at all.
    dev_operator = operator("dev-operator", {"dev-sessions": statements})
    result, explicit, no_document, no_simulation = call_module_cases(lab, tmp_path, MODULE, [
        dev_operator,
        operator("deny-operator", {"dev-sessions": statements, "never-prod": never_prod}),
        operator("document-operator", {"dev-sessions": [statements[0], statements[2]]}),
        operator("blind-operator", {})]).results
    assert not any(r.get("failed") or r.get("changed") for r in (result, explicit, no_document, no_simulation))

    simulation = result["controller"]["simulation"]
    assert simulation["status"] == "simulated"
    assert simulation["principal_arn"] == "arn:aws:iam::123456789012:user/dev-operator"
    assert simulation["document"]["decision"] == "allowed"
    assert node_of(result, dev)["start_session"] == "allowed" and codes(node_of(result, dev)) == []
    denied_node = node_of(result, prod)
    assert denied_node["start_session"] == "implicitDeny" and denied_node["online"] is True
    denied = finding(denied_node, "CALLER_ACCESS_DENIED")
    assert "AccessDeniedException" in denied["message"] and "Env=prod" in denied["message"]
    assert denied["resources"]["resource_arn"] == f"arn:aws:ec2:us-east-1:123456789012:instance/{prod}"
    assert "ssm:resourceTag" in denied["fix"]
    assert result["controller"]["findings"] == []

    # An explicit Deny is named.
    denied = finding(node_of(explicit, prod), "CALLER_ACCESS_DENIED")
    assert "explicitDeny by never-prod" in denied["message"] and "remove the Deny in never-prod" in denied["fix"]

    # Without the document statement, every session is refused: on the controller.
    assert [f["code"] for f in no_document["controller"]["findings"]] == ["CALLER_DOCUMENT_DENIED"]
    assert no_document["controller"]["simulation"]["document"]["decision"] == "implicitDeny"

    # A caller that may not simulate: said plainly, and nothing else fails.
    simulation = no_simulation["controller"]["simulation"]
    assert simulation["status"] == "not_simulated"
    assert simulation["reason"].startswith("the caller may not iam:SimulatePrincipalPolicy")
    [unavailable] = no_simulation["controller"]["findings"]
    assert unavailable["code"] == "SIMULATION_UNAVAILABLE" and "Could not simulate" in unavailable["message"]
    assert [n["start_session"] for n in no_simulation["nodes"]] == [None, None]

    # The fix for the first caller's finding: the node is a dev node after all.
    ec2.create_tags(Resources=[prod], Tags=[{"Key": "Env", "Value": "dev"}])
    result = preflight(lab, tmp_path, dev_operator)
    assert [n["start_session"] for n in result["nodes"]] == ["allowed", "allowed"]
    assert [codes(n) for n in result["nodes"]] == [[], []]
    ec2.delete_tags(Resources=[dev, prod], Tags=[{"Key": "Env"}])


def test_unknown_and_malformed_ids(online_lab, tmp_path):
    lab = online_lab
    unknown = "i-0123456789abcdef0"
    result, bad, nothing = call_module_cases(lab, tmp_path, MODULE, [
        {"instance_ids": [unknown, "mi-0123456789abcdef0"], "check_caller": False},
        {"instance_ids": ["web-1", ec2_ids(lab)[0]]}, {"filters": {"tag:Env": "nowhere"}}]).results
    assert [r.get("failed", False) for r in (result, bad, nothing)] == [False, True, False]
    assert codes(node_of(result, unknown)) == ["INSTANCE_NOT_FOUND"]
    assert node_of(result, unknown)["state"] == "not-found"
    assert codes(node_of(result, "mi-0123456789abcdef0")) == ["AGENT_NOT_REGISTERED"]
    assert bad["msg"].startswith("instance_ids: web-1 is not an EC2 instance id")
    assert nothing["nodes"] == [] and any("No instance matched" in w for w in nothing["warnings"])


def test_the_preflight_playbook_prints_a_table(online_lab, tmp_path):
    lab = online_lab
    node, other = ec2_ids(lab)
    lab.client("ec2").delete_route(RouteTableId=lab.network["private"][0]["route_table"],
                                   DestinationCidrBlock="0.0.0.0/0")
    wait_offline(lab, node)
    try:
        output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "playbooks/preflight.yml",
                            "-e", f"bastionless_transfer_bucket={BUCKET}")
        assert recap["localhost"]["failed"] == 0
        assert "NODE                  NAME            PING            SEVERITY FINDING" in output
        assert f"{node}   lab-node-1      ConnectionLost  error    NAT_ROUTE_MISSING" in output
        assert f"{other}   lab-node-2      Online          ok       -" in output
        assert "fix: aws ec2 create-route" in output
        # every node of the inventory (the lab's may list hybrid nodes too), all Online but one
        total, online = map(int, re.search(r"(\d+) node\(s\): (\d+) Online", output).groups())
        assert total >= 2 and online == total - 1, output
        output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "playbooks/preflight.yml",
                            "-e", f"bastionless_transfer_bucket={BUCKET}", "-e", "preflight_fail=true", check=False)
        assert recap["localhost"]["failed"] == 1 and "Preflight: 2 error(s)" in output
        output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "playbooks/preflight.yml",
                            "-e", '{"preflight_filters": {"tag:ssm-lab": "nodes"}}', check=False)
        assert recap["localhost"]["failed"] == 1
        assert ('preflight_filters {"tag:ssm-lab": "nodes"} match no EC2 instance in us-east-1: there is nothing to '
                "check. Fix the filters (the lab's nodes carry the tag ssm-lab=node), or name the nodes: -e "
                """'{"preflight_instance_ids": ["i-..."]}'.""") in output
    finally:
        nat = [n["NatGatewayId"] for n in lab.client("ec2").describe_nat_gateways()["NatGateways"]
               if n["State"] == "available"][0]
        lab.client("ec2").create_route(RouteTableId=lab.network["private"][0]["route_table"],
                                       DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    wait_online(lab, node)


# =========================================================================================================
# An unprovisioned lab: never registered, the endpoint path, the S3 path, a NAT nobody routes to
# =========================================================================================================


@pytest.fixture(scope="module")
def bare_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1") as lab:
        lab.client("s3").create_bucket(Bucket=BUCKET)
        yield lab


def test_never_registered_with_no_profile_and_no_route(bare_lab, tmp_path):
    lab = bare_lab
    [node] = ec2_ids(lab)
    assert ping_status(lab, node) is None
    assert_target_not_connected(lab, node)
    listed = node_of(preflight(lab, tmp_path, {"filters": {"tag:ssm-lab": "node"}}), node)
    assert listed["ping_status"] == "NotRegistered" and listed["last_ping"] is None
    assert sorted(codes(listed)) == ["AGENT_NOT_REGISTERED", "NO_INSTANCE_PROFILE", "NO_ROUTE_TO_INTERNET"]
    assert "never registered" in finding(listed, "AGENT_NOT_REGISTERED")["message"]
    no_route = finding(listed, "NO_ROUTE_TO_INTERNET")
    assert no_route["resources"]["route_table_id"] == lab.network["private"][0]["route_table"]
    assert "vpc_endpoints" in no_route["fix"]

    # The IAM half of the fix: a profile with the managed policy.
    iam = lab.client("iam")
    iam.create_role(RoleName="preflight-node", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))
    iam.attach_role_policy(RoleName="preflight-node", PolicyArn=CORE_POLICY)
    iam.create_instance_profile(InstanceProfileName="preflight-node")
    iam.add_role_to_instance_profile(InstanceProfileName="preflight-node", RoleName="preflight-node")
    lab.client("ec2").associate_iam_instance_profile(IamInstanceProfile={"Name": "preflight-node"}, InstanceId=node)
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert sorted(codes(listed)) == ["AGENT_NOT_REGISTERED", "NO_ROUTE_TO_INTERNET"]


@pytest.fixture(scope="module")
def endpoint_group(bare_lab):
    ec2 = bare_lab.client("ec2")
    group = ec2.create_security_group(GroupName="preflight-endpoints", Description="https from the VPC",
                                      VpcId=bare_lab.network["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[HTTPS_FROM_VPC])
    return group


def create_endpoint(lab, service: str, group: str, kind: str = "Interface") -> str:
    ec2 = lab.client("ec2")
    if kind == "Gateway":
        return ec2.create_vpc_endpoint(VpcId=lab.network["vpc"], ServiceName=f"com.amazonaws.{lab.region}.{service}",
                                       VpcEndpointType="Gateway",
                                       RouteTableIds=[lab.network["private"][0]["route_table"]])["VpcEndpoint"][
            "VpcEndpointId"]
    return ec2.create_vpc_endpoint(
        VpcId=lab.network["vpc"], ServiceName=f"com.amazonaws.{lab.region}.{service}", VpcEndpointType="Interface",
        SubnetIds=[p["subnet"] for p in lab.network["private"]], SecurityGroupIds=[group], PrivateDnsEnabled=True,
    )["VpcEndpoint"]["VpcEndpointId"]


def test_the_endpoint_path_broken_in_turn(bare_lab, tmp_path, endpoint_group):
    lab, ec2 = bare_lab, bare_lab.client("ec2")
    [node] = ec2_ids(lab)
    vpc = lab.network["vpc"]
    endpoints = {s: create_endpoint(lab, s, endpoint_group) for s in ("ssm", "ec2messages")}

    # One service's endpoint missing: named by service.
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert sorted(codes(listed)) == ["AGENT_NOT_REGISTERED", "ENDPOINT_MISSING"]
    missing = finding(listed, "ENDPOINT_MISSING")
    assert missing["resources"]["service"] == "ssmmessages"
    assert f"--service-name com.amazonaws.{lab.region}.ssmmessages" in missing["fix"]
    endpoints["ssmmessages"] = create_endpoint(lab, missing["resources"]["service"], endpoint_group)
    wait_online(lab, node)
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
    assert listed["online"] is True and codes(listed) == []

    # Each break, its finding and its fix; the node comes back each time.
    def broken(code: str) -> dict:
        wait_offline(lab, node)
        assert_target_not_connected(lab, node)
        listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)
        assert set(codes(listed)) == {"AGENT_CONNECTION_LOST", code}, listed  # SG: once per endpoint
        return finding(listed, code)

    def healed() -> None:
        wait_online(lab, node)
        assert codes(node_of(preflight(lab, tmp_path, {"instance_ids": [node]}), node)) == []

    ec2.modify_vpc_endpoint(VpcEndpointId=endpoints["ssm"], PrivateDnsEnabled=False)
    off = broken("ENDPOINT_PRIVATE_DNS_OFF")
    assert off["resources"]["vpc_endpoint_id"] == endpoints["ssm"] and "--private-dns-enabled" in off["fix"]
    ec2.modify_vpc_endpoint(VpcEndpointId=off["resources"]["vpc_endpoint_id"], PrivateDnsEnabled=True)
    healed()

    ec2.revoke_security_group_ingress(GroupId=endpoint_group, IpPermissions=[HTTPS_FROM_VPC])
    closed = broken("ENDPOINT_SG_NO_443")
    assert closed["resources"]["security_group_ids"] == [endpoint_group]
    assert f"authorize-security-group-ingress --group-id {endpoint_group}" in closed["fix"]
    ec2.authorize_security_group_ingress(GroupId=closed["resources"]["security_group_ids"][0],
                                         IpPermissions=[HTTPS_FROM_VPC])
    healed()

    for attribute, code in (("EnableDnsHostnames", "VPC_DNS_HOSTNAMES_OFF"), ("EnableDnsSupport", "VPC_DNS_SUPPORT_OFF")):
        ec2.modify_vpc_attribute(VpcId=vpc, **{attribute: {"Value": False}})
        off = broken(code)
        assert off["resources"]["vpc_id"] == vpc and "modify-vpc-attribute" in off["fix"]
        ec2.modify_vpc_attribute(VpcId=off["resources"]["vpc_id"], **{attribute: {"Value": True}})
        healed()


def test_no_s3_path_and_a_nat_gateway_nobody_routes_to(bare_lab, tmp_path):
    """The last row of the symptom table: the session opens (SSM goes through the endpoints), but downloads from
    outside fail, because the NAT gateway exists and the private route table does not point to it. With the
    transfer bucket, the S3 path of the aws_ssm connection is missing too."""
    lab, ec2 = bare_lab, bare_lab.client("ec2")
    [node] = ec2_ids(lab)
    wait_online(lab, node)
    s3 = lab.client("s3")
    s3.put_object(Bucket=BUCKET, Key="package.rpm", Body=b"a package")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "package.rpm"}, ExpiresIn=600)
    download = f"curl -sS -f -o /dev/null '{url}' && echo downloaded"

    # A NAT gateway in the public subnet, with its internet gateway, and no route to it from the node's table.
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=lab.network["vpc"])
    public_table = ec2.create_route_table(VpcId=lab.network["vpc"])["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_table, SubnetId=lab.network["public_subnet"])
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=lab.network["public_subnet"], AllocationId=allocation)["NatGateway"][
        "NatGatewayId"]

    # The session opens...
    session = lab.client("ssm").start_session(Target=node)
    lab.client("ssm").terminate_session(SessionId=session["SessionId"])
    # ...but a download from the node fails.
    failed = finished_command(lab, node, download)
    assert "downloaded" not in failed["StandardOutputContent"], failed

    result = preflight(lab, tmp_path, {"instance_ids": [node], "transfer_bucket": BUCKET})
    listed = node_of(result, node)
    assert listed["online"] is True
    assert sorted(codes(listed)) == ["NAT_ROUTE_MISSING", "NO_S3_PATH"]
    assert {f["severity"] for f in listed["findings"]} == {"warning"}
    unrouted = finding(listed, "NAT_ROUTE_MISSING")
    assert "package installs" in unrouted["message"] and unrouted["resources"]["nat_gateway_id"] == nat
    no_s3 = finding(listed, "NO_S3_PATH")
    assert BUCKET in no_s3["message"] and "S3 gateway endpoint" in no_s3["fix"]
    assert result["summary"]["nodes_ok"] == 0 and result["summary"]["errors"] == 0

    # Fix the S3 path alone (the free gateway endpoint): the transfer works, the NAT warning stays.
    create_endpoint(lab, "s3", None, kind="Gateway")
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node], "transfer_bucket": BUCKET}), node)
    assert codes(listed) == ["NAT_ROUTE_MISSING"]
    assert "downloaded" in finished_command(lab, node, download)["StandardOutputContent"]

    # And the route the finding names: nothing left.
    ec2.create_route(RouteTableId=unrouted["resources"]["route_table_id"], DestinationCidrBlock="0.0.0.0/0",
                     NatGatewayId=unrouted["resources"]["nat_gateway_id"])
    listed = node_of(preflight(lab, tmp_path, {"instance_ids": [node], "transfer_bucket": BUCKET}), node)
    assert codes(listed) == [] and listed["online"] is True
