# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The session_logging role's computations: its inputs checked and the session key's policy. The role's tasks only
render what these return. Each filter's documentation is in the .yml file of its name beside this one."""

from __future__ import annotations

from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import (
    KMS_CUSTOMER_ALIAS,
    LINUX_NAME,
    kms_key_form,
    s3_bucket_name_ok,
)
from ansible_collections.bastionless.ssm.plugins.plugin_utils._role_inputs import role_inputs
from ansible_collections.bastionless.ssm.plugins.plugin_utils._session_key import SESSION_STREAM_CONTEXT, s3_key_condition

DEFAULTS = {"region": "", "s3": True, "bucket": "", "cloudwatch": True, "kms_key_arn": "",
            "kms_alias": "alias/bastionless-ssm-sessions", "idle_timeout": 20, "max_duration": 0,
            "run_as_default_user": "", "transition_days": 90, "expiration_days": 365}


def _within(value, low: int, high: int | None = None) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = int(value)
    except (TypeError, ValueError):
        return False
    return low <= number and (high is None or number <= high)


def problems(inputs: dict) -> list:
    """Every problem of the role's inputs that needs no AWS call, one sentence each naming the variable and the fix.
    ``inputs``: the role's variables without their ``session_logging_`` prefix, ``region`` already resolved."""
    given = role_inputs(inputs, DEFAULTS, "session_logging_problems")
    bucket, user, key, alias = (str(given[name] or "") for name in ("bucket", "run_as_default_user", "kms_key_arn",
                                                                    "kms_alias"))
    found = []
    if not given["region"]:
        found.append("session_logging_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS "
                     "profile configuration; set session_logging_region (or bastionless_region in the inventory).")
    if given["s3"] and not bucket:
        found.append("session_logging_bucket: empty while session_logging_s3 is true; name the transcripts bucket.")
    elif given["s3"] and not s3_bucket_name_ok(bucket):
        found.append(f"session_logging_bucket: {bucket} is not a bucket name AWS accepts (3-63 lowercase letters, "
                     "digits, dots and hyphens, starting and ending with a letter or digit).")
    if not _within(given["idle_timeout"], 1, 60):
        found.append(f"session_logging_idle_timeout: {given['idle_timeout']} is out of range; AWS accepts 1 to 60 "
                     "minutes.")
    if not _within(given["max_duration"], 0, 1440):
        found.append(f"session_logging_max_duration: {given['max_duration']} is out of range; AWS accepts 1 to 1440 "
                     "minutes (0 for no limit).")
    if user and not LINUX_NAME.match(user):
        found.append(f"session_logging_run_as_default_user: {user} is not a user name Linux accepts (lowercase "
                     "letters, digits, _ and -, at most 32, not starting with a digit or -).")
    if key and kms_key_form(key) != "key_arn":
        found.append(f"session_logging_kms_key_arn: {key} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID).")
    if not KMS_CUSTOMER_ALIAS.match(alias):
        found.append(f"session_logging_kms_alias: {alias} must look like alias/NAME (not alias/aws/...).")
    expiration, transition = given["expiration_days"], given["transition_days"]
    if _within(expiration, 1) and _within(transition, 0) and int(expiration) <= int(transition):
        found.append(f"session_logging_expiration_days: {expiration} comes before the transition after {transition} "
                     "days; expire later or transition sooner.")
    if not given["s3"] and not given["cloudwatch"]:
        found.append("session_logging_s3 and session_logging_cloudwatch are both false: sessions would not be logged.")
    return found


def key_policy(key_users, partition: str = "aws", account: str = "", region: str = "", log_group: str = "",
               bucket: str = "", prefix: str = "") -> dict:
    """The session key's policy: the account administers it, CloudWatch Logs in ``region`` uses it for the log group
    ``log_group`` only, and the roles ``key_users`` (ARNs; the instances' roles) use it only through S3 for the
    transcripts under ``prefix`` in ``bucket``, and to decrypt Session Manager's session stream keys (the
    encryption context Session Manager sets: aws:ssm:SessionId and aws:ssm:TargetId). The same conditions as the
    instance role's own policy (the instance_role filters)."""
    log_group_arn = f"arn:{partition}:logs:{region}:{account}:log-group:{log_group}"
    statements = [
        {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "CloudWatchLogsEncryptsTheSessionLogGroup", "Effect": "Allow",
         "Principal": {"Service": f"logs.{region}.amazonaws.com"},
         "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
         "Resource": "*", "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_group_arn}}},
    ]
    if key_users and bucket:
        statements.append({"Sid": "InstancesEncryptWhatTheyUpload", "Effect": "Allow",
                           "Principal": {"AWS": list(key_users)}, "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                           "Resource": "*", "Condition": s3_key_condition(partition, region, bucket, prefix)})
    if key_users:
        statements.append({"Sid": "InstancesDecryptSessionStreams", "Effect": "Allow",
                           "Principal": {"AWS": list(key_users)}, "Action": ["kms:Decrypt"], "Resource": "*",
                           "Condition": dict(SESSION_STREAM_CONTEXT)})
    return {"Version": "2012-10-17", "Statement": statements}


class FilterModule:
    """The session_logging filters."""

    def filters(self):
        return {"session_logging_problems": problems, "session_logging_key_policy": key_policy}
