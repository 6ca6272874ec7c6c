# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The session_logging filters: input problems and the session key's policy. The role runs them against the lab in
tests/integration/test_role_session_logging.py."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.filter import session_logging as sl

GOOD = {"region": "us-east-1", "bucket": "audit-logs"}
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize("extra", [
    {}, {"s3": False, "bucket": ""}, {"cloudwatch": False}, {"kms_key_arn": KEY}, {"idle_timeout": 1},
    {"idle_timeout": 60}, {"max_duration": 1440}, {"run_as_default_user": "auditor"}, {"kms_alias": "alias/a/b_c-d"},
    {"transition_days": 0, "expiration_days": 30}, {"expiration_days": 0}, {"transition_days": 30, "expiration_days": 31},
    {"s3": False, "bucket": "Ignored_When_Off"},
])
def test_good_inputs_have_no_problem(extra):
    assert sl.problems({**GOOD, **extra}) == []


def test_each_message_in_full():
    assert sl.problems({"region": "", "bucket": "Bad_Bucket", "idle_timeout": 0, "max_duration": 1441,
                        "run_as_default_user": "9ops", "kms_key_arn": "alias/ssm", "kms_alias": "alias/aws/ssm",
                        "transition_days": 90, "expiration_days": 90}) == [
        "session_logging_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS profile "
        "configuration; set session_logging_region (or bastionless_region in the inventory).",
        "session_logging_bucket: Bad_Bucket is not a bucket name AWS accepts (3-63 lowercase letters, digits, dots and "
        "hyphens, starting and ending with a letter or digit).",
        "session_logging_idle_timeout: 0 is out of range; AWS accepts 1 to 60 minutes.",
        "session_logging_max_duration: 1441 is out of range; AWS accepts 1 to 1440 minutes (0 for no limit).",
        "session_logging_run_as_default_user: 9ops is not a user name Linux accepts (lowercase letters, digits, _ and "
        "-, at most 32, not starting with a digit or -).",
        "session_logging_kms_key_arn: alias/ssm is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID).",
        "session_logging_kms_alias: alias/aws/ssm must look like alias/NAME (not alias/aws/...).",
        "session_logging_expiration_days: 90 comes before the transition after 90 days; expire later or transition "
        "sooner.",
    ]


@pytest.mark.parametrize("extra, expected", [
    ({"bucket": ""}, "session_logging_bucket: empty while session_logging_s3 is true; name the transcripts bucket."),
    ({"bucket": "audit-s3alias"}, "session_logging_bucket: audit-s3alias is not a bucket name AWS accepts"),
    ({"bucket": "xn--audit"}, "session_logging_bucket: xn--audit is not a bucket name AWS accepts"),
    ({"idle_timeout": 61}, "session_logging_idle_timeout: 61 is out of range"),
    ({"idle_timeout": "many"}, "session_logging_idle_timeout: many is out of range"),
    ({"max_duration": -1}, "session_logging_max_duration: -1 is out of range"),
    ({"run_as_default_user": "Ops"}, "session_logging_run_as_default_user: Ops is not a user name"),
    ({"kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/short"}, "session_logging_kms_key_arn: arn:aws:kms:"),
    ({"kms_alias": "sessions"}, "session_logging_kms_alias: sessions must look like alias/NAME"),
    ({"expiration_days": 10, "transition_days": 30}, "session_logging_expiration_days: 10 comes before the transition"),
    ({"s3": False, "cloudwatch": False},
     "session_logging_s3 and session_logging_cloudwatch are both false: sessions would not be logged."),
])
def test_each_problem_alone(extra, expected):
    [problem] = sl.problems({**GOOD, **extra})
    assert problem.startswith(expected), problem


def test_an_unknown_input_is_an_error():
    with pytest.raises(AnsibleFilterError, match="session_logging_problems: log_bucket is not an input it knows"):
        sl.problems({**GOOD, "log_bucket": "x"})


def test_the_key_policy():
    policy = sl.key_policy(["arn:aws:iam::123456789012:role/r"], partition="aws-cn", account="123456789012",
                           region="cn-north-1", log_group="/ssm/sessions", bucket="audit", prefix="sessions/")
    admin, logs, users, streams = policy["Statement"]
    assert admin["Principal"] == {"AWS": "arn:aws-cn:iam::123456789012:root"} and admin["Action"] == "kms:*"
    assert logs["Principal"] == {"Service": "logs.cn-north-1.amazonaws.com"}
    assert logs["Condition"] == {"ArnEquals": {
        "kms:EncryptionContext:aws:logs:arn": "arn:aws-cn:logs:cn-north-1:123456789012:log-group:/ssm/sessions"}}
    assert users == {"Sid": "InstancesEncryptWhatTheyUpload", "Effect": "Allow",
                     "Principal": {"AWS": ["arn:aws:iam::123456789012:role/r"]},
                     "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*",
                     "Condition": {"StringEquals": {"kms:ViaService": "s3.cn-north-1.amazonaws.com"},
                                   "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                                       "arn:aws-cn:s3:::audit", "arn:aws-cn:s3:::audit/sessions/*"]}}}
    assert streams["Sid"] == "InstancesDecryptSessionStreams" and streams["Action"] == ["kms:Decrypt"]
    assert streams["Condition"] == {"Null": {"kms:EncryptionContext:aws:ssm:SessionId": "false"},
                                    "StringLike": {"kms:EncryptionContext:aws:ssm:TargetId": ["i-*", "mi-*"]}}
    no_bucket = sl.key_policy(["arn:aws:iam::1:role/r"], account="1", region="r", log_group="g")
    assert [s["Sid"] for s in no_bucket["Statement"]][-1] == "InstancesDecryptSessionStreams"
    assert [s["Sid"] for s in sl.key_policy([], account="1", region="r", log_group="g")["Statement"]] == [
        "AccountAdministers", "CloudWatchLogsEncryptsTheSessionLogGroup"]
