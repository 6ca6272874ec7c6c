# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The instance_role filters: input problems, the logging statements, the targets' problems and the check after
apply. The role runs them against the lab in tests/integration/test_role_instance_role.py."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.filter import instance_role as ir
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import ALLOWED, IMPLICIT_DENY, decide

GOOD = {"region": "us-east-1"}
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
A, B = "i-0123456789abcdef0", "i-0fedcba9876543210"


def instance(instance_id, tokens="required", profile=None):
    found = {"instance_id": instance_id, "metadata_options": {"http_tokens": tokens}}
    if profile:
        found["iam_instance_profile"] = {"arn": f"arn:aws:iam::123456789012:instance-profile{profile}"}
    return found


def role(service="ec2.amazonaws.com", policies=(CORE,), profiles=("bastionless-ssm-instance",)):
    trust = {"Statement": [{"Effect": "Deny", "Principal": {"Service": "ec2.amazonaws.com"}},
                           {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
    return {"assume_role_policy_document": trust,
            "managed_policies": [{"policy_arn": arn} for arn in policies],
            "instance_profiles": [{"instance_profile_name": name} for name in profiles]}


# --- inputs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    {}, {"name": "team+ssm=1,a.b@c_d-e", "path": "/ssm/team/"},
    {"managed_policies": [CORE, "arn:aws-cn:iam::123456789012:policy/x"]},
    {"permissions_boundary": "arn:aws:iam::123456789012:policy/boundary"}, {"kms_key_arn": KEY},
    {"log_bucket": "audit-logs", "log_prefix": "sessions/"}, {"instance_ids": [A, "i-01234567"]},
])
def test_good_inputs_have_no_problem(extra):
    assert ir.problems({**GOOD, **extra}) == []


def test_each_message_in_full():
    assert ir.problems({"region": "", "name": "no spaces allowed", "path": "ssm", "permissions_boundary": "boundary",
                        "managed_policies": [CORE, "AmazonSSMManagedInstanceCore"], "kms_key_arn": "alias/ssm",
                        "log_bucket": "Audit_Logs", "log_prefix": "/sessions", "instance_ids": [A, "web-1", "i-XYZ"]}) == [
        "instance_role_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS profile "
        "configuration; set instance_role_region (or bastionless_region in the inventory).",
        "instance_role_name: no spaces allowed is not a valid IAM role name (1-64 letters, digits and +=,.@_-).",
        "instance_role_path: ssm must start and end with / (for example /ssm/).",
        "instance_role_permissions_boundary: boundary is not a managed policy ARN.",
        "instance_role_managed_policies: AmazonSSMManagedInstanceCore is not a managed policy ARN "
        "(arn:aws:iam::...:policy/...).",
        "instance_role_kms_key_arn: alias/ssm is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID).",
        "instance_role_log_bucket: Audit_Logs is not a valid S3 bucket name.",
        "instance_role_log_prefix: drop the leading / from /sessions.",
        "instance_role_instance_ids: web-1, i-XYZ are not EC2 instance ids (i-...).",
    ]


@pytest.mark.parametrize("extra, expected", [
    ({"name": "x" * 65}, "instance_role_name: "),
    ({"path": "/ssm"}, "instance_role_path: /ssm must start"),
    ({"path": "/a b/"}, "instance_role_path: /a b/ must start"),
    ({"log_prefix": "sessions/"}, "instance_role_log_prefix is set without instance_role_log_bucket; set the bucket "
                                  "too."),
])
def test_each_problem_alone(extra, expected):
    [problem] = ir.problems({**GOOD, **extra})
    assert problem.startswith(expected), problem


def test_an_unknown_input_is_an_error():
    with pytest.raises(AnsibleFilterError, match="instance_role_problems: mode is not an input it knows"):
        ir.problems({**GOOD, "mode": "instance_profile"})


# --- logging statements -------------------------------------------------------------------------------------------


def test_no_logging_no_statement():
    assert ir.logging_statements({}) == []
    assert ir.logging_statements({"log_bucket": "", "log_prefix": "", "log_group": "", "kms_key_arn": ""}) == []


def test_every_logging_statement():
    statements = ir.logging_statements({"log_bucket": "audit-logs", "log_prefix": "sessions//", "log_group": "/ssm/s",
                                        "kms_key_arn": KEY}, partition="aws-cn", account="1", region="cn-north-1")
    assert [(s["Sid"], s["Resource"]) for s in statements] == [
        ("SessionTranscriptsToS3", ["arn:aws-cn:s3:::audit-logs/sessions/*"]),
        ("SessionBucketEncryption", ["arn:aws-cn:s3:::audit-logs"]),
        ("SessionLogsToCloudWatch", ["arn:aws-cn:logs:cn-north-1:1:log-group:/ssm/s:*"]),
        ("SessionLogGroupEncryption", ["*"]),
        ("SessionEncryptionKeyThroughS3", [KEY]),
        ("SessionEncryptionKey", [KEY]),
    ]
    through_s3, stream = statements[-2:]
    assert through_s3["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.cn-north-1.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:aws:s3:arn": ["arn:aws-cn:s3:::audit-logs",
                                                            "arn:aws-cn:s3:::audit-logs/sessions/*"]}}
    assert stream["Action"] == ["kms:Decrypt"]
    assert ir.logging_statements({"log_bucket": "audit-logs"})[0]["Resource"] == ["arn:aws:s3:::audit-logs/*"]


# --- targets ------------------------------------------------------------------------------------------------------


def test_targets_that_are_fine():
    assert ir.target_problems([], region="us-east-1") == []
    assert ir.target_problems([instance(A, "optional")], ids=[A]) == []  # IMDSv1 matters only to DHMC
    assert ir.target_problems([instance(A, "optional")], mode="default_host_management", require_imdsv2=True) == []
    assert ir.target_problems([instance(A)], mode="default_host_management") == []


def test_missing_instances():
    assert ir.target_problems([], ids=[A], region="us-east-1") == [
        f"instance_role_instance_ids: {A} is not a pending, running or stopped instance in us-east-1; remove it or fix "
        "the ids."]
    assert ir.target_problems([instance(A)], ids=[A, B, "i-00000000"], filters={"tag:Team": "web"},
                              region="eu-west-1") == [
        f"instance_role_instance_ids: {B}, i-00000000 are not a pending, running or stopped instance in eu-west-1 "
        "matching instance_role_instance_filters; remove them or fix the ids."]


def test_dhmc_needs_imdsv2():
    [one] = ir.target_problems([instance(A, "optional"), instance(B)], mode="default_host_management")
    assert one == (f"Default Host Management only manages instances that require IMDSv2, and {A} does not (HttpTokens "
                   "is optional). Fix: set instance_role_dhmc_require_imdsv2 to true to let the role require it, or run "
                   f"aws ec2 modify-instance-metadata-options --instance-id {A} --http-tokens required --http-endpoint "
                   "enabled.")
    [two] = ir.target_problems([instance(A, "optional"), {"instance_id": B}], mode="default_host_management")
    assert f"and {A}, {B} do not (HttpTokens" in two
    assert two.endswith(f"--instance-id {A} --http-tokens required --http-endpoint enabled; aws ec2 "
                        f"modify-instance-metadata-options --instance-id {B} --http-tokens required --http-endpoint "
                        "enabled.")


def test_would_attach():
    instances = [instance(B, profile="/other"), instance(A), instance("i-00000000", profile="/x")]
    assert ir.would_attach(instances) == [A]
    assert ir.would_attach(instances, replace=True) == [A, B, "i-00000000"]
    assert ir.would_attach([]) == []


# --- after apply --------------------------------------------------------------------------------------------------

ASKED = {"role_name": "bastionless-ssm-instance", "policies": [CORE], "profile": "bastionless-ssm-instance"}


def test_verify_as_asked():
    assert ir.verify_problems(role(), [instance(A, profile="/bastionless-ssm-instance")], **ASKED) == []
    assert ir.verify_problems(role(service=["ssm.amazonaws.com"], profiles=()), [instance(A)], role_name="r",
                              service="ssm.amazonaws.com", mode="default_host_management") == []


@pytest.mark.parametrize("found, clause", [
    ({}, "it does not exist"),
    (role(service="ssm.amazonaws.com"), "it does not trust ec2.amazonaws.com"),
    # judged as IAM would: a Deny of sts:AssumeRole wins over the Allow naming the service
    (dict(role(), assume_role_policy_document={"Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": "*", "Action": "sts:*"}]}), "it does not trust ec2.amazonaws.com"),
    (role(policies=()), f"it lacks {CORE}"),
    (role(profiles=("other",)), "it is not in the instance profile bastionless-ssm-instance"),
])
def test_verify_the_role(found, clause):
    assert ir.verify_problems(found, [], **ASKED) == [
        f"The role bastionless-ssm-instance is not as it should be: {clause}."]


def test_verify_the_instances():
    instances = [instance(A), instance(B, profile="/someone-else"), instance("i-00000000", profile="/ssm/x"),
                 instance("i-11111111", profile="/bastionless-ssm-instance")]
    assert ir.verify_problems(role(), instances, skipped=[B], **ASKED) == [
        f"{A}, i-00000000 still lack the instance profile bastionless-ssm-instance."]
    assert ir.verify_problems(role(profiles=()), [instance(A, "optional"), instance(B)], role_name="r",
                              service="ec2.amazonaws.com", mode="default_host_management") == [
        f"{A} still do not require IMDSv2."]


# --- what a node may do with the session key, judged ---------------------------------------------------------------

BUCKET_KEY_CONTEXT = "arn:aws:s3:::audit-logs"  # an S3 Bucket Key's encryption context: the bucket


def _node_policy():
    statements = ir.logging_statements({"log_bucket": "audit-logs", "log_prefix": "sessions/", "kms_key_arn": KEY},
                                       account="123456789012", region="us-east-1")
    return {"Version": "2012-10-17", "Statement": statements}


@pytest.mark.parametrize("action, context, allowed", [
    # S3 encrypting a transcript the node uploads, with a bucket key and without one
    ("kms:GenerateDataKey", {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                             "kms:EncryptionContext:aws:s3:arn": BUCKET_KEY_CONTEXT}, True),
    ("kms:GenerateDataKey", {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                             "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::audit-logs/sessions/alice-01.log"},
     True),
    # the agent decrypting a session stream's data key
    ("kms:Decrypt", {"kms:EncryptionContext:aws:ssm:SessionId": "alice-0123456789abcdef0",
                     "kms:EncryptionContext:aws:ssm:TargetId": "i-0123456789abcdef0"}, True),
    # the node calling KMS itself for anything else: no
    ("kms:GenerateDataKey", {}, False),
    ("kms:Decrypt", {}, False),
    ("kms:Decrypt", {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                     "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::other-bucket/x"}, False),
    ("kms:GenerateDataKey", {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                             "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::audit-logs/elsewhere/x"}, False),
    ("kms:GenerateDataKey", {"kms:ViaService": "s3.eu-west-1.amazonaws.com",
                             "kms:EncryptionContext:aws:s3:arn": BUCKET_KEY_CONTEXT}, False),
    ("kms:GenerateDataKey", {"kms:EncryptionContext:aws:ssm:SessionId": "alice-0123456789abcdef0",
                             "kms:EncryptionContext:aws:ssm:TargetId": "i-0123456789abcdef0"}, False),
    ("kms:Decrypt", {"kms:EncryptionContext:aws:ssm:TargetId": "i-0123456789abcdef0"}, False),
])
def test_the_node_uses_the_session_key_only_as_session_manager_and_s3_do(action, context, allowed):
    assert decide([_node_policy()], action, KEY, context) == (ALLOWED if allowed else IMPLICIT_DENY)
