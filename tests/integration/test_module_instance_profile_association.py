"""bastionless.ssm.instance_profile_association against the lab, through ansible-playbook.

The tests of the first part build on each other in order, on a two-node lab whose nodes start with no
instance profile: check mode, association by id, idempotence, a node with another profile left alone and then
replaced, removal, and errors. The last test uses a provisioned one-node lab, whose node is Online with the
lab's profile, to show that the node follows the profile the module gives it."""

import json
import time

import pytest
from ansible_cli import call_module
from ssm_lab.harness.testing import running_lab, wait_until

MODULE = "bastionless.ssm.instance_profile_association"
CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
EC2_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
WEB, OTHER = "bastionless-web", "bastionless-other"
UNKNOWN_INSTANCE = "i-0123456789abcdef0"


def make_profile(lab, name: str, *policies: str) -> str:
    """A role and an instance profile called ``name``; returns the profile's ARN."""
    iam = lab.client("iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=EC2_TRUST)
    for policy in policies:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    arn = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def ec2_ids(lab) -> list:
    return [n for n in lab.network["nodes"] if n.startswith("i-")]


def profiles(lab) -> dict:
    """{instance id: associated profile ARN or None} for the lab's EC2 nodes."""
    nodes = ec2_ids(lab)
    found = lab.client("ec2").describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": nodes}, {"Name": "state", "Values": ["associated"]}],
    )["IamInstanceProfileAssociations"]
    current = dict.fromkeys(nodes)
    current.update({a["InstanceId"]: a["IamInstanceProfile"]["Arn"] for a in found})
    return current


def ping_status(lab, node: str):
    rows = lab.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [node]}])["InstanceInformationList"]
    return rows[0]["PingStatus"] if rows else None


def play(lab, tmp_path, args: dict, *flags: str, fails: bool = False):
    """Run the module once with ``args``; return (result, output, recap)."""
    return call_module(lab, tmp_path, MODULE, args, *flags, fails=fails)


@pytest.fixture(scope="module")
def assoc_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2") as lab:
        lab.web = make_profile(lab, WEB, CORE_POLICY)
        lab.other = make_profile(lab, OTHER, CORE_POLICY)
        yield lab


@pytest.fixture(scope="module")
def online_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1", "--provisioned") as lab:
        yield lab


def test_the_nodes_start_without_a_profile(assoc_lab):
    assert profiles(assoc_lab) == dict.fromkeys(ec2_ids(assoc_lab))


def test_check_mode_predicts_and_changes_nothing(assoc_lab, tmp_path):
    lab = assoc_lab
    first, second = ec2_ids(lab)
    result, output, recap = play(lab, tmp_path, {"instance_ids": [first], "instance_profile": WEB},
                                 "--check", "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert result["instances"] == [{"instance_id": first, "before": None, "after": lab.web, "action": "associated"}]
    assert result["changed_instances"] == [first]
    assert result["instance_profile_arn"] == lab.web
    assert result["diff"] == {"before": {first: None}, "after": {first: lab.web}}
    assert profiles(lab) == {first: None, second: None}


def test_associate_by_id_then_again_changes_nothing(assoc_lab, tmp_path):
    lab = assoc_lab
    first, second = ec2_ids(lab)
    result, output, recap = play(lab, tmp_path, {"instance_ids": [first], "instance_profile": WEB})
    assert recap["localhost"]["changed"] == 1, output
    assert result["changed_instances"] == [first]
    assert profiles(lab) == {first: lab.web, second: None}

    result, output, recap = play(lab, tmp_path, {"instance_ids": [first], "instance_profile": lab.web})
    assert recap["localhost"]["changed"] == 0, output
    assert result["instances"] == [{"instance_id": first, "before": lab.web, "after": lab.web, "action": "unchanged"}]
    assert result["changed_instances"] == []


def test_a_node_with_another_profile_is_left_alone_without_replace(assoc_lab, tmp_path):
    lab = assoc_lab
    first, second = ec2_ids(lab)
    lab.client("ec2").associate_iam_instance_profile(IamInstanceProfile={"Name": OTHER}, InstanceId=second)
    args = {"filters": {"tag:ssm-lab": "node"}, "instance_profile": WEB}

    result, output, recap = play(lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 0, output
    actions = {i["instance_id"]: i["action"] for i in result["instances"]}
    assert actions == {first: "unchanged", second: "skipped_different"}
    assert result["different"] == [second]
    [warning] = [w for w in result["warnings"] if second in w]
    assert "replace: true" in warning and WEB in warning
    assert profiles(lab) == {first: lab.web, second: lab.other}


def test_replace_true_replaces_it_by_tag_filter(assoc_lab, tmp_path):
    lab = assoc_lab
    first, second = ec2_ids(lab)
    args = {"filters": {"tag:ssm-lab": "node"}, "instance_profile": WEB, "replace": True}

    result, output, recap = play(lab, tmp_path, args, "--check")
    assert recap["localhost"]["changed"] == 1, output
    assert profiles(lab) == {first: lab.web, second: lab.other}

    result, output, recap = play(lab, tmp_path, args, "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert {i["instance_id"]: i["action"] for i in result["instances"]} == {first: "unchanged", second: "replaced"}
    assert result["changed_instances"] == [second]
    assert result["different"] == []
    assert result["diff"]["before"] == {first: lab.web, second: lab.other}
    assert result["diff"]["after"] == {first: lab.web, second: lab.web}
    assert profiles(lab) == {first: lab.web, second: lab.web}

    result, output, recap = play(lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 0, output


def test_absent_removes_only_our_profile(assoc_lab, tmp_path):
    lab = assoc_lab
    first, second = ec2_ids(lab)
    # another profile to remove: nothing of it is there
    result, output, recap = play(lab, tmp_path, {"filters": {"tag:ssm-lab": "node"}, "instance_profile": OTHER,
                                                 "state": "absent"})
    assert recap["localhost"]["changed"] == 0, output
    assert sorted(result["different"]) == sorted([first, second])
    assert not [w for w in result.get("warnings", []) if "replace" in w]

    args = {"filters": {"tag:Name": "lab-node-2"}, "instance_profile": WEB, "state": "absent"}
    result, output, recap = play(lab, tmp_path, args, "--check")
    assert recap["localhost"]["changed"] == 1, output
    assert profiles(lab) == {first: lab.web, second: lab.web}

    result, output, recap = play(lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 1, output
    assert result["instances"] == [{"instance_id": second, "before": lab.web, "after": None, "action": "disassociated"}]
    assert profiles(lab) == {first: lab.web, second: None}

    result, output, recap = play(lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 0, output

    # without instance_profile, any association goes
    result, output, recap = play(lab, tmp_path, {"instance_ids": [first, second], "state": "absent"})
    assert recap["localhost"]["changed"] == 1, output
    assert result["changed_instances"] == [first]
    assert profiles(lab) == {first: None, second: None}


def test_an_unknown_profile_is_one_clear_error_and_changes_nothing(assoc_lab, tmp_path):
    lab = assoc_lab
    before = profiles(lab)
    result, output, _recap = play(lab, tmp_path, {"filters": {"tag:ssm-lab": "node"},
                                                  "instance_profile": "no-such-profile"}, fails=True)
    assert result["msg"] == "IAM instance profile no-such-profile does not exist. Nothing was changed."
    assert profiles(lab) == before


def test_unknown_instance_ids_are_one_clear_error_and_change_nothing(assoc_lab, tmp_path):
    lab = assoc_lab
    first, _second = ec2_ids(lab)
    before = profiles(lab)
    assert before[first] is None  # the module would associate it, were it not for the unknown id
    result, output, _recap = play(lab, tmp_path, {"instance_ids": [first, UNKNOWN_INSTANCE],
                                                  "instance_profile": WEB}, fails=True)
    assert result["msg"] == f"Instance ID(s) not found: {UNKNOWN_INSTANCE}. Nothing was changed."
    assert result["missing_instance_ids"] == [UNKNOWN_INSTANCE]
    assert profiles(lab) == before


def test_the_node_follows_the_profile_it_is_given(online_lab, tmp_path):
    lab = online_lab
    [node] = ec2_ids(lab)
    wait_until(lambda: ping_status(lab, node) == "Online", timeout=60, interval=0.5, what=f"{node} to be Online")
    lab_profile = profiles(lab)[node]
    assert lab_profile.endswith("/ssm-lab-node")
    ours = make_profile(lab, "bastionless-managed", CORE_POLICY)

    # Not ours without replace; ours with it, and the node stays Online.
    result, output, recap = play(lab, tmp_path, {"instance_ids": [node], "instance_profile": ours})
    assert result["different"] == [node] and recap["localhost"]["changed"] == 0, output
    result, output, recap = play(lab, tmp_path, {"instance_ids": [node], "instance_profile": ours, "replace": True})
    assert result["changed_instances"] == [node], output
    assert profiles(lab) == {node: ours}
    time.sleep(3)
    assert ping_status(lab, node) == "Online"

    # Without a profile the node drops out of Systems Manager...
    result, output, recap = play(lab, tmp_path, {"instance_ids": [node], "state": "absent"})
    assert result["changed_instances"] == [node], output
    wait_until(lambda: ping_status(lab, node) not in ("Online",), timeout=60, interval=0.5, what=f"{node} to leave Online")

    # ...and comes back Online once the module associates our profile again.
    result, output, recap = play(lab, tmp_path, {"instance_ids": [node], "instance_profile": "bastionless-managed"})
    assert [i["action"] for i in result["instances"]] == ["associated"], output
    wait_until(lambda: ping_status(lab, node) == "Online", timeout=60, interval=0.5, what=f"{node} to be Online again")
