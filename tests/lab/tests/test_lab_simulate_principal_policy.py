"""IAM SimulatePrincipalPolicy, which the lab serves because moto does not (its server answers 500).

Over real HTTP with boto3: decisions for users (own and group policies), roles, tag conditions given as context
entries, explicit Deny, permissions boundaries, missing context values, and the caller's own permission to simulate."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
DOCUMENT = "arn:aws:ssm:us-east-1:123456789012:document/SSM-SessionManagerRunShell"
OPERATOR_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "DevNodes", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "arn:aws:ec2:*:*:instance/*",
     "Condition": {"StringEquals": {"ssm:resourceTag/Env": "dev"}}},
    {"Sid": "NeverProd", "Effect": "Deny", "Action": "ssm:*", "Resource": "*",
     "Condition": {"StringEquals": {"aws:ResourceTag/Env": "prod"}}},
    {"Sid": "Documents", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "arn:aws:ssm:*:*:document/*"},
    {"Sid": "SimulateSelf", "Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy",
     "Resource": "arn:aws:iam::*:user/${aws:username}"},
]}


def _tags(**tags):
    return [{"ContextKeyName": f"{prefix}{k}", "ContextKeyValues": [v], "ContextKeyType": "string"}
            for k, v in tags.items() for prefix in ("ssm:resourceTag/", "aws:ResourceTag/")]


def _decisions(iam, principal, resources, context=None, action="ssm:StartSession"):
    kwargs = {"PolicySourceArn": principal, "ActionNames": [action], "ResourceArns": resources}
    if context:
        kwargs["ContextEntries"] = context
    results = iam.simulate_principal_policy(**kwargs)["EvaluationResults"]
    return {r["EvalResourceName"]: r for r in results}


@pytest.fixture(scope="module")
def sim_lab(start_lab):
    with start_lab("simulate-lab", "--nodes", "1") as lab:
        iam = lab.client("iam")
        iam.create_user(UserName="operator")
        iam.put_user_policy(UserName="operator", PolicyName="operator", PolicyDocument=json.dumps(OPERATOR_POLICY))
        key = iam.create_access_key(UserName="operator")["AccessKey"]
        lab.operator = lab.client("iam", key["AccessKeyId"], key["SecretAccessKey"])
        lab.operator_arn = iam.get_user(UserName="operator")["User"]["Arn"]
        iam.create_user(UserName="viewer")
        key = iam.create_access_key(UserName="viewer")["AccessKey"]
        lab.viewer = lab.client("iam", key["AccessKeyId"], key["SecretAccessKey"])
        lab.viewer_arn = iam.get_user(UserName="viewer")["User"]["Arn"]
        yield lab


def test_tag_conditions_decide_per_context(sim_lab):
    iam = sim_lab.client("iam")
    arn = sim_lab.operator_arn
    assert _decisions(iam, arn, [INSTANCE], _tags(Env="dev"))[INSTANCE]["EvalDecision"] == "allowed"
    staging = _decisions(iam, arn, [INSTANCE], _tags(Env="staging"))[INSTANCE]
    assert staging["EvalDecision"] == "implicitDeny"
    prod = _decisions(iam, arn, [INSTANCE], _tags(Env="prod"))[INSTANCE]
    assert prod["EvalDecision"] == "explicitDeny"
    assert [m["SourcePolicyId"] for m in prod["MatchedStatements"]] == ["operator"]
    # no tags given: the condition keys are reported missing
    untagged = _decisions(iam, arn, [INSTANCE])[INSTANCE]
    assert untagged["EvalDecision"] == "implicitDeny"
    assert set(untagged["MissingContextValues"]) == {"ssm:resourceTag/Env", "aws:ResourceTag/Env"}
    # the document resource needs no tag
    assert _decisions(iam, arn, [DOCUMENT])[DOCUMENT]["EvalDecision"] == "allowed"


def test_group_policies_roles_and_boundaries(sim_lab):
    iam = sim_lab.client("iam")
    iam.create_user(UserName="grouped")
    iam.create_group(GroupName="ops")
    iam.add_user_to_group(GroupName="ops", UserName="grouped")
    user_arn = iam.get_user(UserName="grouped")["User"]["Arn"]
    assert _decisions(iam, user_arn, [INSTANCE])[INSTANCE]["EvalDecision"] == "implicitDeny"
    iam.attach_group_policy(GroupName="ops", PolicyArn="arn:aws:iam::aws:policy/AmazonSSMFullAccess")
    allowed = _decisions(iam, user_arn, [INSTANCE])[INSTANCE]
    assert allowed["EvalDecision"] == "allowed"
    assert allowed["MatchedStatements"][0]["SourcePolicyType"] == "aws-managed"

    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    boundary = iam.create_policy(PolicyName="only-describe", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:Describe*", "Resource": "*"}]}))
    role = iam.create_role(RoleName="bounded", AssumeRolePolicyDocument=trust,
                           PermissionsBoundary=boundary["Policy"]["Arn"])["Role"]["Arn"]
    iam.attach_role_policy(RoleName="bounded", PolicyArn="arn:aws:iam::aws:policy/AmazonSSMFullAccess")
    bounded = _decisions(iam, role, [INSTANCE])[INSTANCE]
    assert bounded["EvalDecision"] == "implicitDeny"
    assert bounded["PermissionsBoundaryDecisionDetail"]["AllowedByPermissionsBoundary"] is False
    described = _decisions(iam, role, ["*"], action="ssm:DescribeInstanceInformation")["*"]
    assert described["EvalDecision"] == "allowed"


def test_unknown_principal_is_no_such_entity(sim_lab):
    with pytest.raises(ClientError) as raised:
        _decisions(sim_lab.client("iam"), "arn:aws:iam::123456789012:user/nobody", [INSTANCE])
    assert raised.value.response["Error"]["Code"] == "NoSuchEntity"


def test_the_caller_needs_permission_to_simulate(sim_lab):
    # The operator may simulate itself (${aws:username}), not another user.
    own = _decisions(sim_lab.operator, sim_lab.operator_arn, [INSTANCE], _tags(Env="dev"))
    assert own[INSTANCE]["EvalDecision"] == "allowed"
    with pytest.raises(ClientError) as raised:
        _decisions(sim_lab.operator, sim_lab.viewer_arn, [INSTANCE])
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    # The viewer has no policy at all: not even itself.
    with pytest.raises(ClientError) as raised:
        _decisions(sim_lab.viewer, sim_lab.viewer_arn, [INSTANCE])
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert "iam:SimulatePrincipalPolicy" in raised.value.response["Error"]["Message"]
