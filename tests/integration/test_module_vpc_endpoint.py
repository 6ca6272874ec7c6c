"""bastionless.ssm.vpc_endpoint against the lab: check mode, create, idempotency, drift made behind the module's
back (private DNS, subnets, security groups, a deleted endpoint), a gateway endpoint, absent, and the validation
messages. The tests run in order and share one offline lab."""

import ast
import json
import os

import pytest
from ansible_cli import ROOT, call_module_cases, run
from ssm_lab.harness.testing import running_lab

DEAD = ("deleted", "deleting", "failed", "rejected", "expired")

PLAYBOOK = """\
- name: Run bastionless.ssm.vpc_endpoint once
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the module
      bastionless.ssm.vpc_endpoint: {args}
      register: result
      ignore_errors: true

    - name: Save its result
      ansible.builtin.copy:
        content: "{{{{ result | to_json }}}}"
        dest: {dest}
        mode: "0600"
      check_mode: false
      changed_when: false
      diff: false
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1") as lab:
        yield lab


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("vpc_endpoint")


@pytest.fixture(scope="module")
def net(lab):
    """The lab's network, and what the tests remember between them."""
    ec2 = lab.client("ec2")
    extra = ec2.create_security_group(GroupName="vpce-extra", Description="drift", VpcId=lab.network["vpc"])["GroupId"]
    return {
        "vpc": lab.network["vpc"],
        "subnets": [p["subnet"] for p in lab.network["private"]],
        "tables": [p["route_table"] for p in lab.network["private"]],
        "group": lab.network["node_group"],
        "extra_group": extra,
        "ssm": f"com.amazonaws.{lab.region}.ssm",
        "s3": f"com.amazonaws.{lab.region}.s3",
    }


def module(lab, work, args, *flags):
    """Run the module once with args (and ansible-playbook flags); return (its registered result, the output)."""
    path = work / "playbook.yml"
    dest = work / "result.json"
    if dest.exists():
        dest.unlink()
    path.write_text(PLAYBOOK.format(args=json.dumps(args), dest=json.dumps(str(dest))), encoding="utf-8")
    output, recap = run(lab, "ansible-playbook", str(path), *flags)
    assert recap["localhost"]["failed"] == 0, output
    return json.loads(dest.read_text(encoding="utf-8")), output


def ok(result, output):
    assert not result.get("failed"), f"{result.get('msg')}\n{output[-4000:]}"
    return result


def endpoints(lab, service, live=True):
    found = lab.client("ec2").describe_vpc_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [lab.network["vpc"]]}, {"Name": "service-name", "Values": [service]}]
    )["VpcEndpoints"]
    return [e for e in found if not live or e["State"].lower() not in DEAD]


def only(lab, service):
    live = endpoints(lab, service)
    assert len(live) == 1, live
    return live[0]


def ssm_args(net, **overrides):
    args = {
        "vpc_id": net["vpc"],
        "service": "ssm",
        "subnet_ids": net["subnets"],
        "security_group_ids": [net["group"]],
        "private_dns_enabled": True,
        "tags": {"Name": "lab-ssm", "Team": "platform"},
    }
    args.update(overrides)
    return args


# --- interface endpoint -------------------------------------------------------------------------------


def test_check_mode_creates_nothing_and_reports_changed(lab, work, net):
    result, output = module(lab, work, ssm_args(net), "--check", "--diff")
    ok(result, output)
    assert result["changed"] is True
    predicted = result["vpc_endpoint"]
    assert predicted["service_name"] == net["ssm"]
    assert predicted["vpc_endpoint_id"] is None
    assert sorted(predicted["subnet_ids"]) == sorted(net["subnets"])
    assert predicted["private_dns_enabled"] is True
    assert predicted["tags"] == {"Name": "lab-ssm", "Team": "platform"}
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["security_group_ids"] == [net["group"]]
    assert endpoints(lab, net["ssm"], live=False) == []


def test_create(lab, work, net):
    result, output = module(lab, work, ssm_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is True
    created = only(lab, net["ssm"])
    returned = result["vpc_endpoint"]
    assert returned["vpc_endpoint_id"] == created["VpcEndpointId"]
    assert returned["state"] == "available"
    assert returned["vpc_endpoint_type"] == "Interface"
    assert sorted(returned["subnet_ids"]) == sorted(net["subnets"])
    assert [g["group_id"] for g in returned["groups"]] == [net["group"]]
    assert returned["private_dns_enabled"] is True and created["PrivateDnsEnabled"] is True
    assert returned["tags"] == {"Name": "lab-ssm", "Team": "platform"}
    assert result["diff"] == {
        "before": {},
        "after": {"service_name": net["ssm"], "vpc_endpoint_type": "Interface", "subnet_ids": sorted(net["subnets"]),
                  "security_group_ids": [net["group"]], "route_table_ids": [], "private_dns_enabled": True,
                  "state": "available"},
    }
    net["ssm_endpoint"] = created["VpcEndpointId"]


def test_second_run_changes_nothing(lab, work, net):
    result, output = module(lab, work, ssm_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is False
    assert result["vpc_endpoint"]["vpc_endpoint_id"] == net["ssm_endpoint"]
    assert result["diff"]["before"] == result["diff"]["after"]
    # and in check mode too
    result, output = module(lab, work, ssm_args(net), "--check")
    assert ok(result, output)["changed"] is False


def test_unset_options_leave_the_endpoint_alone(lab, work, net):
    args = {"vpc_id": net["vpc"], "service": "ssm"}
    result, output = module(lab, work, args)
    ok(result, output)
    assert result["changed"] is False
    assert sorted(result["vpc_endpoint"]["subnet_ids"]) == sorted(net["subnets"])
    assert result["vpc_endpoint"]["tags"] == {"Name": "lab-ssm", "Team": "platform"}


def test_private_dns_turned_off_behind_its_back_is_detected_and_fixed(lab, work, net):
    ec2 = lab.client("ec2")
    ec2.modify_vpc_endpoint(VpcEndpointId=net["ssm_endpoint"], PrivateDnsEnabled=False)
    assert only(lab, net["ssm"])["PrivateDnsEnabled"] is False

    result, output = module(lab, work, ssm_args(net), "--check", "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["diff"]["before"]["private_dns_enabled"] is False
    assert result["diff"]["after"]["private_dns_enabled"] is True
    assert only(lab, net["ssm"])["PrivateDnsEnabled"] is False  # check mode changed nothing

    result, output = module(lab, work, ssm_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["vpc_endpoint"]["vpc_endpoint_id"] == net["ssm_endpoint"]
    assert result["vpc_endpoint"]["private_dns_enabled"] is True
    assert only(lab, net["ssm"])["PrivateDnsEnabled"] is True

    result, output = module(lab, work, ssm_args(net))
    assert ok(result, output)["changed"] is False


def test_private_dns_left_at_its_default_is_turned_back_on(lab, work, net):
    lab.client("ec2").modify_vpc_endpoint(VpcEndpointId=net["ssm_endpoint"], PrivateDnsEnabled=False)
    args = ssm_args(net)
    del args["private_dns_enabled"]
    result, output = module(lab, work, args)
    assert ok(result, output)["changed"] is True
    assert only(lab, net["ssm"])["PrivateDnsEnabled"] is True


def test_subnet_drift_is_fixed(lab, work, net):
    lab.client("ec2").modify_vpc_endpoint(VpcEndpointId=net["ssm_endpoint"], RemoveSubnetIds=[net["subnets"][1]])
    assert only(lab, net["ssm"])["SubnetIds"] == [net["subnets"][0]]

    result, output = module(lab, work, ssm_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["diff"]["before"]["subnet_ids"] == [net["subnets"][0]]
    assert result["diff"]["after"]["subnet_ids"] == sorted(net["subnets"])
    assert sorted(only(lab, net["ssm"])["SubnetIds"]) == sorted(net["subnets"])


def test_subnets_are_purged_to_what_is_given(lab, work, net):
    result, output = module(lab, work, ssm_args(net, subnet_ids=[net["subnets"][1]]))
    assert ok(result, output)["changed"] is True
    assert only(lab, net["ssm"])["SubnetIds"] == [net["subnets"][1]]
    result, output = module(lab, work, ssm_args(net))
    assert ok(result, output)["changed"] is True
    assert sorted(only(lab, net["ssm"])["SubnetIds"]) == sorted(net["subnets"])


def test_security_group_drift_is_fixed(lab, work, net):
    lab.client("ec2").modify_vpc_endpoint(VpcEndpointId=net["ssm_endpoint"], AddSecurityGroupIds=[net["extra_group"]],
                                          RemoveSecurityGroupIds=[net["group"]])
    result, output = module(lab, work, ssm_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["diff"]["before"]["security_group_ids"] == [net["extra_group"]]
    assert [g["GroupId"] for g in only(lab, net["ssm"])["Groups"]] == [net["group"]]


def test_tags_are_added_and_purged_only_when_asked(lab, work, net):
    result, output = module(lab, work, ssm_args(net, tags={"Owner": "me"}))
    assert ok(result, output)["changed"] is True
    assert result["vpc_endpoint"]["tags"] == {"Name": "lab-ssm", "Team": "platform", "Owner": "me"}
    result, output = module(lab, work, ssm_args(net, purge_tags=True))
    assert ok(result, output)["changed"] is True
    assert result["vpc_endpoint"]["tags"] == {"Name": "lab-ssm", "Team": "platform"}


def test_a_second_live_endpoint_is_named_in_a_warning_and_the_oldest_is_kept(lab, work, net):
    ec2 = lab.client("ec2")
    extra = ec2.create_vpc_endpoint(VpcId=net["vpc"], ServiceName=net["ssm"], VpcEndpointType="Interface",
                                    SubnetIds=[net["subnets"][0]], SecurityGroupIds=[net["group"]])
    extra_id = extra["VpcEndpoint"]["VpcEndpointId"]
    try:
        result, output = module(lab, work, ssm_args(net))
        ok(result, output)
        assert result["changed"] is False
        assert result["vpc_endpoint"]["vpc_endpoint_id"] == net["ssm_endpoint"]
        assert extra_id in output and "managing the oldest" in output, output
    finally:
        ec2.delete_vpc_endpoints(VpcEndpointIds=[extra_id])


def test_an_endpoint_deleted_behind_its_back_is_recreated(lab, work, net):
    old = net["ssm_endpoint"]
    lab.client("ec2").delete_vpc_endpoints(VpcEndpointIds=[old])
    assert endpoints(lab, net["ssm"]) == []
    assert old in [e["VpcEndpointId"] for e in endpoints(lab, net["ssm"], live=False)]  # AWS still lists it

    result, output = module(lab, work, ssm_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["diff"]["before"] == {}
    new = only(lab, net["ssm"])
    assert result["vpc_endpoint"]["vpc_endpoint_id"] == new["VpcEndpointId"] != old
    assert result["vpc_endpoint"]["state"] == "available"
    assert new["PrivateDnsEnabled"] is True
    net["ssm_endpoint"] = new["VpcEndpointId"]

    result, output = module(lab, work, ssm_args(net))
    assert ok(result, output)["changed"] is False


# --- gateway endpoint ---------------------------------------------------------------------------------


def s3_args(net, **overrides):
    args = {"vpc_id": net["vpc"], "service": "s3", "vpc_endpoint_type": "Gateway", "route_table_ids": net["tables"]}
    args.update(overrides)
    return args


def test_s3_gateway_on_the_route_tables(lab, work, net):
    result, output = module(lab, work, s3_args(net), "--check")
    assert ok(result, output)["changed"] is True
    assert endpoints(lab, net["s3"]) == []

    result, output = module(lab, work, s3_args(net), "--diff")
    ok(result, output)
    assert result["changed"] is True
    gateway = only(lab, net["s3"])
    assert gateway["VpcEndpointType"] == "Gateway"
    assert sorted(gateway["RouteTableIds"]) == sorted(net["tables"])
    assert result["vpc_endpoint"]["vpc_endpoint_id"] == gateway["VpcEndpointId"]
    assert result["diff"]["after"]["route_table_ids"] == sorted(net["tables"])

    result, output = module(lab, work, s3_args(net))
    assert ok(result, output)["changed"] is False

    result, output = module(lab, work, s3_args(net, route_table_ids=[net["tables"][0]]))
    assert ok(result, output)["changed"] is True
    assert only(lab, net["s3"])["RouteTableIds"] == [net["tables"][0]]

    result, output = module(lab, work, s3_args(net))
    assert ok(result, output)["changed"] is True
    assert sorted(only(lab, net["s3"])["RouteTableIds"]) == sorted(net["tables"])


def test_a_policy_is_applied_once(lab, work, net):
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bastionless-*/*"}]}
    result, output = module(lab, work, s3_args(net, policy=policy))
    assert ok(result, output)["changed"] is True
    assert json.loads(only(lab, net["s3"])["PolicyDocument"]) == policy
    result, output = module(lab, work, s3_args(net, policy=policy))
    assert ok(result, output)["changed"] is False


# --- absent -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service, kind", [("ssm", "Interface"), ("s3", "Gateway")])
def test_absent_and_absent_again(lab, work, net, service, kind):
    args = {"vpc_id": net["vpc"], "service": service, "vpc_endpoint_type": kind, "state": "absent"}
    live = only(lab, net[service])

    result, output = module(lab, work, args, "--check", "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["diff"]["after"] == {} and result["diff"]["before"]["state"] == "available"
    assert only(lab, net[service])["VpcEndpointId"] == live["VpcEndpointId"]

    result, output = module(lab, work, args, "--diff")
    ok(result, output)
    assert result["changed"] is True
    assert result["vpc_endpoint"] == {}
    assert result["diff"]["after"] == {}
    assert endpoints(lab, net[service]) == []

    result, output = module(lab, work, args, "--diff")
    ok(result, output)
    assert result["changed"] is False
    assert result["diff"] == {"before": {}, "after": {}}


# --- validation ---------------------------------------------------------------------------------------

VALIDATION = [
    ({"vpc_endpoint_type": "Gateway", "service": "s3", "subnet_ids": ["subnet-1"]},
     "subnet_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint is attached to route tables, "
     "so remove subnet_ids and use route_table_ids."),
    ({"vpc_endpoint_type": "Gateway", "service": "s3", "security_group_ids": ["sg-1"]},
     "security_group_ids is only for vpc_endpoint_type=Interface: a Gateway endpoint has no security groups, "
     "so remove security_group_ids."),
    ({"vpc_endpoint_type": "Gateway", "service": "s3", "private_dns_enabled": True},
     "private_dns_enabled=true is only for vpc_endpoint_type=Interface: a Gateway endpoint has no private DNS, "
     "so remove private_dns_enabled (or use vpc_endpoint_type=Interface)."),
    ({"route_table_ids": ["rtb-1"]},
     "route_table_ids is only for vpc_endpoint_type=Gateway: an Interface endpoint sits in subnets, so remove "
     "route_table_ids and use subnet_ids (or set vpc_endpoint_type=Gateway)."),
    ({"subnet_ids": ["subnet-1", "subnet-1"]}, "subnet_ids lists subnet-1 more than once: list each ID once."),
    ({"security_group_ids": ["sg-1", "sg-2", "sg-1"]},
     "security_group_ids lists sg-1 more than once: list each ID once."),
    ({"vpc_endpoint_type": "Gateway", "service": "s3", "route_table_ids": ["rtb-1", "rtb-1"]},
     "route_table_ids lists rtb-1 more than once: list each ID once."),
]


VALIDATION_IDS = [m.split(" ", maxsplit=1)[0] + ("-duplicate" if "once" in m else "") for _args, m in VALIDATION]


@pytest.fixture(scope="module")
def validation(lab, tmp_path_factory):
    """Every case of VALIDATION, run once in one play."""
    # Made-up IDs in a VPC that does not exist: the module must fail before it calls AWS at all.
    return call_module_cases(lab, tmp_path_factory.mktemp("validation"), "bastionless.ssm.vpc_endpoint",
                             [{"vpc_id": "vpc-00000000", "service": "ssm", **args} for args, _message in VALIDATION])


@pytest.mark.parametrize("case", range(len(VALIDATION)), ids=VALIDATION_IDS)
def test_validation_errors(validation, case):
    result, message = validation.results[case], VALIDATION[case][1]
    assert result["failed"] is True, validation.output
    assert result["msg"] == message
    assert result["changed"] is False


# --- the documented examples --------------------------------------------------------------------------


def test_the_examples_run_against_the_lab(lab, work, net):
    """The module's EXAMPLES, as one play: the SSM endpoint is made and deleted, the S3 gateway stays."""
    with open(os.path.join(ROOT, "plugins", "modules", "vpc_endpoint.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    examples = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", None) == "EXAMPLES")
    tasks = "\n".join("    " + line if line else line for line in examples.splitlines())
    path = work / "examples.yml"
    path.write_text("- name: The examples of bastionless.ssm.vpc_endpoint\n  hosts: localhost\n  connection: local\n"
                    "  gather_facts: false\n  tasks:\n" + tasks + "\n", encoding="utf-8")
    assert endpoints(lab, net["ssm"]) == [] and endpoints(lab, net["s3"]) == []

    output, recap = run(lab, "ansible-playbook", str(path))
    assert recap["localhost"]["failed"] == 0, output
    assert recap["localhost"]["changed"] == 4, output  # security group, ssm created, s3 created, ssm deleted
    assert endpoints(lab, net["ssm"]) == []
    gateway = only(lab, net["s3"])
    assert sorted(gateway["RouteTableIds"]) == sorted(net["tables"])
    assert len(endpoints(lab, net["ssm"], live=False)) >= 1  # the deleted one, still listed
