"""RunInstances with an instance profile leaves an IAM instance profile association on every instance it
launches, as on AWS, so that Replace and Disassociate work on them; and the lab's reachability follows the
association when it is replaced.

Runs in its own provisioned one-node lab: it launches extra instances and changes the node's profile."""

from __future__ import annotations

import boto3
import pytest
from labhelpers import trust_policy, wait_until

CORE_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
LAB_PROFILE = "ssm-lab-node"


@pytest.fixture(scope="module")
def profile_lab(start_lab):
    with start_lab("profile-lab", "--nodes", "1", "--provisioned") as lab:
        yield lab


def _profile(lab, name: str, *policies: str) -> str:
    """A role and instance profile called ``name`` with ``policies``; returns the profile's ARN."""
    iam = lab.client("iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy("ec2.amazonaws.com"))
    for policy in policies:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    arn = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def _launch(lab, count: int, **extra) -> list[str]:
    [node] = lab.ec2_ids
    template = lab.instance(node)
    instances = lab.ec2.run_instances(ImageId=template["ImageId"], InstanceType="t3.micro", MinCount=count,
                                      MaxCount=count, SubnetId=template["SubnetId"], **extra)["Instances"]
    return [i["InstanceId"] for i in instances]


def _associations(lab, instance_ids: list[str]) -> dict[str, dict]:
    found = lab.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": instance_ids}])["IamInstanceProfileAssociations"]
    return {a["InstanceId"]: a for a in found}


@pytest.mark.parametrize("by", ["Name", "Arn"])
def test_every_launched_instance_gets_an_association(profile_lab, by):
    lab = profile_lab
    name = f"launch-by-{by.lower()}"
    arn = _profile(lab, name, CORE_POLICY)
    launched = _launch(lab, 3, IamInstanceProfile={by: arn if by == "Arn" else name})
    associations = _associations(lab, launched)
    assert sorted(associations) == sorted(launched)
    for instance_id in launched:
        assert associations[instance_id]["State"] == "associated"
        assert associations[instance_id]["IamInstanceProfile"]["Arn"] == arn
        assert lab.instance(instance_id)["IamInstanceProfile"]["Arn"] == arn


def test_instances_launched_in_another_region_get_their_associations_there(profile_lab):
    lab = profile_lab
    arn = _profile(lab, "launch-elsewhere", CORE_POLICY)
    ec2 = boto3.client("ec2", endpoint_url=lab.endpoint, region_name="eu-west-1",
                       aws_access_key_id=lab.env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=lab.env["AWS_SECRET_ACCESS_KEY"])
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    launched = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image, InstanceType="t3.micro", MinCount=2, MaxCount=2, IamInstanceProfile={"Arn": arn})["Instances"]]
    found = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": launched}])["IamInstanceProfileAssociations"]
    assert sorted(a["InstanceId"] for a in found) == sorted(launched)
    assert _associations(lab, launched) == {}


def test_instances_launched_without_a_profile_have_no_association(profile_lab):
    launched = _launch(profile_lab, 2)
    assert _associations(profile_lab, launched) == {}
    for instance_id in launched:
        assert "IamInstanceProfile" not in profile_lab.instance(instance_id)


def test_replace_and_disassociate_work_on_every_launched_instance(profile_lab):
    lab = profile_lab
    first = _profile(lab, "launch-first", CORE_POLICY)
    second = _profile(lab, "launch-second", CORE_POLICY)
    launched = _launch(lab, 2, IamInstanceProfile={"Arn": first})
    last = launched[-1]
    association = _associations(lab, [last])[last]["AssociationId"]
    lab.ec2.replace_iam_instance_profile_association(IamInstanceProfile={"Arn": second}, AssociationId=association)
    assert _associations(lab, [last])[last]["IamInstanceProfile"]["Arn"] == second
    # DescribeInstances shows the replacement too, as on AWS (moto alone keeps the old profile there).
    assert lab.instance(last)["IamInstanceProfile"]["Arn"] == second
    lab.ec2.disassociate_iam_instance_profile(AssociationId=_associations(lab, [last])[last]["AssociationId"])
    assert list(_associations(lab, launched)) == [launched[0]]


def test_the_lab_node_follows_its_association_when_it_is_replaced(profile_lab):
    lab = profile_lab
    [node] = lab.ec2_ids
    lab.wait_online(node, 30)
    association = _associations(lab, [node])[node]
    assert association["IamInstanceProfile"]["Arn"].endswith(f"/{LAB_PROFILE}")

    bare = _profile(lab, "no-ssm-permissions")
    lab.ec2.replace_iam_instance_profile_association(IamInstanceProfile={"Arn": bare},
                                                     AssociationId=association["AssociationId"])
    assert lab.wait_not_online(node) == "ConnectionLost"
    wait_until(lambda: lab.problem_codes(node) == {"ROLE_MISSING_PERMISSIONS"},
               what=f"ROLE_MISSING_PERMISSIONS for {node} (now {sorted(lab.problem_codes(node))})")

    lab.ec2.replace_iam_instance_profile_association(IamInstanceProfile={"Name": LAB_PROFILE},
                                                     AssociationId=_associations(lab, [node])[node]["AssociationId"])
    lab.wait_online(node)
    assert lab.problem_codes(node) == set()
