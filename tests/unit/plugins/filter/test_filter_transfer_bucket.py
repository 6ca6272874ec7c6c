# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The transfer_bucket filters: input problems, the controller's policy, the check-mode changes and the check after
apply. The role runs them against the lab in tests/integration/test_role_transfer_bucket.py."""

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.filter import transfer_bucket as tb

GOOD = {"name": "team-transfer", "region": "us-east-1"}
ARN = "arn:aws:s3:::team-transfer"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TLS = {"Version": "2012-10-17", "Statement": [{
    "Sid": "DenyRequestsWithoutTLS", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
    "Resource": [ARN, f"{ARN}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
SSE_S3 = {"arn": ARN, "encryption": "AES256", "kms_key_arn": "", "expiration_days": 1}
SSE_KMS = {"arn": ARN, "encryption": "aws:kms", "kms_key_arn": KEY, "expiration_days": 1}


def bucket(algorithm="AES256", key=None, bucket_key=None, block=True, ownership="BucketOwnerEnforced",
           versioning=None, policy="tls", tags=None, days=1, rule="bastionless-ssm-transfer-expiry") -> dict:
    """A bucket as amazon.aws.s3_bucket_info returns it (policy "tls": the role's own)."""
    policy = TLS if policy == "tls" else policy
    default = {"SSEAlgorithm": algorithm, **({"KMSMasterKeyID": key} if key else {})}
    encryption = {"ApplyServerSideEncryptionByDefault": default}
    if bucket_key is not None:
        encryption["BucketKeyEnabled"] = bucket_key
    return {
        "name": "team-transfer",
        "bucket_encryption": {"ServerSideEncryptionConfiguration": {"Rules": [encryption]}},
        "public_access_block": {"PublicAccessBlockConfiguration": {
            "BlockPublicAcls": block, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True}},
        "bucket_ownership_controls": {"OwnershipControls": {"Rules": [{"ObjectOwnership": ownership}]}},
        "bucket_versioning": {"Status": versioning} if versioning else {},
        "bucket_policy": {"Policy": json.dumps(policy)} if policy else {},
        "bucket_tagging": tags or {},
        "bucket_lifecycle_configuration": {"Rules": [{
            "ID": rule, "Status": "Enabled", "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days}}]},
    }


# --- inputs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    {}, {"expiration_days": 7}, {"expiration_days": "30"}, {"kms_key_id": KEY}, {"kms_key_id": " alias/transfer "},
    {"controller_policy_name": "bastionless-transfer-controller"},
])
def test_good_inputs_have_no_problem(extra):
    assert tb.problems({**GOOD, **extra}) == []


def test_each_message_in_full():
    assert tb.problems({"name": "", "region": "", "expiration_days": 0, "kms_key_id": "my key",
                        "controller_policy_name": "a policy"}) == [
        "transfer_bucket_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS profile "
        "configuration; set transfer_bucket_region (or bastionless_region in the inventory).",
        "transfer_bucket_name: empty; name the bucket the connection moves module files through (the inventories of "
        "this collection set it as bastionless_transfer_bucket, which ansible_aws_ssm_bucket_name reads).",
        "transfer_bucket_expiration_days: 0 is not a whole number of days of at least 1; the lifecycle rule needs 1 or "
        "more (1 is enough: the connection deletes each file once it is moved, the rule sweeps what an interrupted "
        "run left).",
        "transfer_bucket_kms_key_id: my key is not a KMS key reference; give a key ARN (arn:aws:kms:REGION:ACCOUNT:"
        "key/ID), a key id, an alias (alias/NAME) or an alias ARN, or leave it empty for SSE-S3 (AES256).",
        "transfer_bucket_controller_policy_name: a policy is not a name IAM accepts for a policy; use 1-128 letters, "
        "digits and +=,.@_- (or leave it empty to create no policy).",
    ]


@pytest.mark.parametrize("name, example", [
    ("Bastionless_Transfer", "bastionless-transfer"),
    ("my-transfer-s3alias", "my-transfer-s3alias"),
    ("__", "my-team-ssm-transfer"),
    ("-Team.", "team"),
    ("x" * 70 + "!", "x" * 63),
])
def test_a_bad_bucket_name_comes_with_an_example(name, example):
    assert tb.problems({**GOOD, "name": name}) == [
        f"transfer_bucket_name: {name} is not a bucket name S3 accepts; use 3-63 lowercase letters, digits, dots and "
        f"hyphens, starting and ending with a letter or digit (for example {example})."]


@pytest.mark.parametrize("days", [0, -1, "0", "1.5", "one", True, None, 1.5])
def test_days_that_are_not_whole_and_positive(days):
    [problem] = tb.problems({**GOOD, "expiration_days": days})
    assert problem.startswith(f"transfer_bucket_expiration_days: {days} is not a whole number"), problem


@pytest.mark.parametrize("tags", [{}, None, {"Team": "platform", "CostCenter": 1234, "Note": "", "path": "a/b:c@d+e=f"},
                                  {"Équipe": "réseau", "k" * 128: "v" * 256}, {f"t{n}": "x" for n in range(50)}])
def test_tags_s3_takes_have_no_problem(tags):
    assert tb.problems({**GOOD, "tags": tags}) == []


@pytest.mark.parametrize("tags, bad", [
    ({"aws:owner": "ops"}, '"aws:owner": "ops"'),
    ({"AWS:Owner": "ops"}, '"AWS:Owner": "ops"'),
    ({"": "x"}, '"": "x"'),
    ({"k" * 129: "x"}, f'"{"k" * 129}": "x"'),
    ({"Team": "v" * 257}, f'"Team": "{"v" * 257}"'),
    ({"Team": "a;b"}, '"Team": "a;b"'),
    ({"Team": True}, '"Team": true'),
    ({"Team": ["a"]}, '"Team": ["a"]'),
])
def test_a_tag_s3_refuses_is_named_before_the_bucket_is_made(tags, bad):
    assert tb.problems({**GOOD, "tags": {"Good": "tag", **tags}}) == [
        f"transfer_bucket_tags: S3 refuses {bad}; each tag needs a key of 1-128 and a value of up to 256 letters, "
        "digits, spaces and + - = . _ : / @, the key not starting with aws: (aws: is AWS's own). Rename or remove it."]


def test_too_many_tags_and_not_a_dictionary():
    assert tb.problems({**GOOD, "tags": {f"t{n}": "x" for n in range(51)}}) == [
        "transfer_bucket_tags: 51 tags; S3 takes at most 50 on a bucket."]
    assert tb.problems({**GOOD, "tags": ["Team=platform"]}) == [
        'transfer_bucket_tags: ["Team=platform"] is not a dictionary of tag keys and values; give one such as '
        "{'Team': 'platform'}, or {} for none."]


def test_an_unknown_input_is_an_error():
    with pytest.raises(AnsibleFilterError, match="transfer_bucket_problems: bucket is not an input it knows"):
        tb.problems({**GOOD, "bucket": "x"})


# --- the controller's policy -------------------------------------------------------------------------------------


def test_the_controller_policy_without_and_with_a_key():
    plain = tb.controller_policy(ARN)
    assert [s["Sid"] for s in plain["Statement"]] == ["FindTheTransferBucket", "MoveModuleFilesThroughTheBucket"]
    assert plain["Statement"][1]["Resource"] == [f"{ARN}/*"]
    kms = tb.controller_policy(ARN, KEY, "eu-west-1")["Statement"][2]
    assert kms == {"Sid": "EncryptAndDecryptThroughS3", "Effect": "Allow",
                   "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": [KEY],
                   "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}}


# --- the TLS-only policy, read back ---------------------------------------------------------------------------------


def _tls(**change):
    return {"Statement": [{**TLS["Statement"][0], **change}]}


@pytest.mark.parametrize("policy, ours", [
    (json.dumps(TLS), True),
    (TLS, True),
    (_tls(Principal={"AWS": "*"}, Action=["s3:*"], Resource=[f"{ARN}/*", ARN]), True),
    (_tls(Condition={"Bool": {"aws:securetransport": "False"}}), True),
    ("", False), ("not json", False), ({"Statement": "x"}, False), (None, False),
    ({"Statement": TLS["Statement"] * 2}, False),
    (_tls(Sid="Other"), False), (_tls(Effect="Allow"), False), (_tls(Principal="me"), False),
    (_tls(Action="s3:GetObject"), False), (_tls(Resource=[ARN]), False),
    (_tls(Condition={"Bool": {"aws:SecureTransport": "true"}}), False),
])
def test_the_tls_policy_is_recognised_by_meaning(policy, ours):
    assert tb.tls_policy_is_ours(policy, ARN) is ours


# --- check-mode changes ---------------------------------------------------------------------------------------------


def test_a_bucket_as_wanted_needs_no_change():
    assert tb.changes(bucket(), SSE_S3) == []
    assert tb.changes(bucket(tags={"team": "ops", "other": "kept"}), SSE_S3, tags={"team": "ops"}) == []
    assert tb.changes(bucket("aws:kms", key=KEY.rsplit("/", maxsplit=1)[-1], bucket_key=True), SSE_KMS) == []


def test_every_change_named():
    assert tb.changes(bucket("aws:kms", key="other", block=False, ownership="ObjectWriter", versioning="Enabled",
                             policy=None, tags={"team": "dev"}), SSE_S3, tags={"team": "ops"}) == [
        "encryption aws:kms to AES256", "block public access", "object ownership to BucketOwnerEnforced",
        "suspend versioning", "the TLS-only bucket policy", "tags"]
    assert tb.changes(bucket(), SSE_KMS) == ["encryption AES256 to aws:kms", f"encryption key to {KEY}",
                                             "bucket key on"]
    assert tb.changes({}, SSE_S3) == ["encryption none to AES256", "block public access",
                                      "object ownership to BucketOwnerEnforced", "the TLS-only bucket policy"]


# --- after apply ----------------------------------------------------------------------------------------------------


def test_verify_a_bucket_as_asked():
    assert tb.verify_problems(bucket(), SSE_S3) == []
    assert tb.verify_problems(bucket("aws:kms", key=KEY), SSE_KMS) == []


def test_verify_names_every_problem():
    assert tb.verify_problems({}, SSE_S3) == ["it does not exist"]
    assert tb.verify_problems(bucket("aws:kms", key="other", block=False, ownership="", versioning="Enabled",
                                     policy=_tls(Effect="Allow"), days=2), SSE_KMS) == [
        f"it is not encrypted with {KEY}", "it does not block public access", "its object ownership is unset",
        "versioning is on", "its policy is not the TLS-only one",
        "its lifecycle rule bastionless-ssm-transfer-expiry is missing or different"]
    assert tb.verify_problems(bucket(algorithm="aws:kms", rule="someone-else"), SSE_S3) == [
        "its default encryption is aws:kms", "its lifecycle rule bastionless-ssm-transfer-expiry is missing or "
        "different"]
    assert tb.verify_problems(bucket(days=3), {**SSE_S3, "expiration_days": "3"}) == []
