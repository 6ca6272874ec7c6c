"""The lab decides with the collection's IAM evaluator (plugins/module_utils/_iam_policy.py, whose cases are in
tests/unit/plugins/module_utils/test_iam_policy.py), not a copy of its own; and the lab's own part of
SimulatePrincipalPolicy that needs no server: reading the request and writing the response."""

import os
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

from ssm_lab.aws import iamsim, reachability

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
NS = {"iam": "https://iam.amazonaws.com/doc/2010-05-08/"}


def test_the_lab_decides_with_the_collections_evaluator():
    engine_file = os.path.join(REPOSITORY, "plugins", "module_utils", "_iam_policy.py")
    assert os.path.samefile(iamsim.engine.__file__, engine_file)
    assert iamsim.decide is iamsim.engine.decide
    assert iamsim.UnsupportedPolicy is iamsim.engine.UnsupportedPolicy
    assert reachability.iamsim.engine is iamsim.engine


def test_no_second_copy_of_the_matching_rules_in_the_lab():
    """The condition operators and wildcard expansion are written once, in the collection."""
    lab = os.path.join(REPOSITORY, "tests", "lab", "ssm_lab")
    for directory, _dirs, files in os.walk(lab):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(directory, name), encoding="utf-8") as handle:
                    text = handle.read()
                for marker in ("StringNotEqualsIgnoreCase", "ForAllValues", "NotPrincipal"):
                    assert marker not in text, f"{name} evaluates IAM policies itself ({marker})"


def test_parse_request_reads_members_in_order_and_lowers_context_keys():
    form = {"Action": "SimulatePrincipalPolicy", "PolicySourceArn": "arn:aws:iam::123456789012:user/alice"}
    for n in range(1, 12):
        form[f"ActionNames.member.{n}"] = f"ssm:Action{n}"
    form["ContextEntries.member.1.ContextKeyName"] = "ssm:resourceTag/Env"
    form["ContextEntries.member.1.ContextKeyValues.member.1"] = "dev"
    form["ContextEntries.member.1.ContextKeyValues.member.2"] = "test"
    request = iamsim.parse_request(urlencode(form).encode())
    assert request["principal"] == "arn:aws:iam::123456789012:user/alice"
    assert request["actions"] == [f"ssm:Action{n}" for n in range(1, 12)]
    assert request["resources"] == ["*"]
    assert request["context"] == {"ssm:resourcetag/env": ["dev", "test"]}


def test_response_xml_escapes_and_gives_the_boundary_detail():
    xml = iamsim.response_xml([{
        "EvalActionName": "ssm:StartSession", "EvalResourceName": "arn:aws:s3:::a&b",
        "EvalDecision": iamsim.IMPLICIT_DENY, "MatchedStatements": [("p<1>", "user")],
        "MissingContextValues": ["ssm:resourceTag/Env"], "AllowedByPermissionsBoundary": False}])
    member = ET.fromstring(xml).find(".//iam:EvaluationResults/iam:member", NS)
    assert member.findtext("iam:EvalResourceName", namespaces=NS) == "arn:aws:s3:::a&b"
    assert member.findtext("iam:MatchedStatements/iam:member/iam:SourcePolicyId", namespaces=NS) == "p<1>"
    assert member.findtext("iam:MissingContextValues/iam:member", namespaces=NS) == "ssm:resourceTag/Env"
    assert member.findtext("iam:PermissionsBoundaryDecisionDetail/iam:AllowedByPermissionsBoundary",
                           namespaces=NS) == "false"


# --- KMS as S3 asks it on a node's behalf (authz.kms_denial), judged without a server ------------------------

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0000aaaa-0000-4000-8000-000000000000"
ROLE_ARN = "arn:aws:iam::123456789012:role/node"
VIA_S3 = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::logs"}


def _kms_case(key_statements, identity_statements=()):
    import json  # pylint: disable=import-outside-toplevel
    from types import SimpleNamespace  # pylint: disable=import-outside-toplevel

    from ssm_lab.aws import authz  # pylint: disable=import-outside-toplevel

    who = authz.Caller(arn="arn:aws:sts::123456789012:assumed-role/node/i-0123", principal=ROLE_ARN,
                       user_id="AROANODE:i-0123",
                       policies=[("inline", "role", {"Statement": list(identity_statements)})],
                       facts={"aws:userid": ["AROANODE:i-0123"], "aws:principalarn": [ROLE_ARN]})
    key = SimpleNamespace(arn=KEY_ARN, policy=json.dumps({"Statement": list(key_statements)}))
    denial = authz.kms_denial(who, key, "kms:GenerateDataKey", VIA_S3)
    return None if denial is None else denial.message()


ROOT = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}
GENERATE = {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"}
THROUGH_S3 = {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
REFUSED = ("User: arn:aws:sts::123456789012:assumed-role/node/i-0123 is not authorized to perform: "
           f"kms:GenerateDataKey on resource: {KEY_ARN} ")


def test_kms_a_key_policy_that_names_the_role_is_enough():
    assert _kms_case([ROOT, {**GENERATE, "Principal": {"AWS": ROLE_ARN}, "Condition": THROUGH_S3}]) is None
    other = {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}
    assert _kms_case([ROOT, {**GENERATE, "Principal": {"AWS": ROLE_ARN}, "Condition": other}]) == (
        REFUSED + "because no identity-based policy allows the kms:GenerateDataKey action")


def test_kms_a_key_policy_for_the_account_lets_the_roles_policies_decide():
    assert _kms_case([ROOT], [{**GENERATE, "Condition": THROUGH_S3}]) is None
    assert _kms_case([ROOT]) == REFUSED + "because no identity-based policy allows the kms:GenerateDataKey action"


def test_kms_a_key_policy_that_names_neither_refuses_and_a_deny_wins():
    assert _kms_case([], [GENERATE]) == REFUSED + "because no resource-based policy allows the kms:GenerateDataKey action"
    deny = {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
    assert _kms_case([ROOT, deny], [GENERATE]) == REFUSED + "with an explicit deny in a resource-based policy"
    assert _kms_case([{**GENERATE, "Principal": {"AWS": ROLE_ARN}}], [{**GENERATE, "Effect": "Deny"}]) == (
        REFUSED + "with an explicit deny in an identity-based policy")
