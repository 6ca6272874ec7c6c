# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The instance_role role's computations: its inputs checked, the session logging statements, what the target
instances do not allow, and what is still not as asked after the apply phase. The role's tasks only render what
these return. Each filter's documentation is in the .yml file of its name beside this one."""

from __future__ import annotations

from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import trusts
from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import (
    IAM_NAME,
    IAM_PATH,
    INSTANCE_ID,
    MANAGED_POLICY_ARN,
    kms_key_form,
    s3_bucket_name_ok,
)
from ansible_collections.bastionless.ssm.plugins.plugin_utils._role_inputs import role_inputs
from ansible_collections.bastionless.ssm.plugins.plugin_utils._session_key import SESSION_STREAM_CONTEXT, s3_key_condition

DEFAULTS = {"region": "", "name": "bastionless-ssm-instance", "path": "/", "managed_policies": [],
            "permissions_boundary": "", "log_bucket": "", "log_prefix": "", "log_group": "", "kms_key_arn": "",
            "instance_ids": []}
DHMC = "default_host_management"


def _text(value) -> str:
    return "" if value is None else str(value)


def problems(inputs: dict) -> list:
    """Every problem of the role's inputs that needs no AWS call, one sentence each naming the variable and the fix.
    ``inputs``: the role's variables without their ``instance_role_`` prefix, ``region`` already resolved."""
    given = role_inputs(inputs, DEFAULTS, "instance_role_problems")
    name, path, boundary = _text(given["name"]), _text(given["path"]), _text(given["permissions_boundary"])
    key, bucket, prefix = _text(given["kms_key_arn"]), _text(given["log_bucket"]), _text(given["log_prefix"])
    found = []
    if not given["region"]:
        found.append("instance_role_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS "
                     "profile configuration; set instance_role_region (or bastionless_region in the inventory).")
    if not IAM_NAME.match(name):
        found.append(f"instance_role_name: {name} is not a valid IAM role name (1-64 letters, digits and +=,.@_-).")
    if not IAM_PATH.match(path):
        found.append(f"instance_role_path: {path} must start and end with / (for example /ssm/).")
    if boundary and not MANAGED_POLICY_ARN.match(boundary):
        found.append(f"instance_role_permissions_boundary: {boundary} is not a managed policy ARN.")
    for policy in given["managed_policies"] or ():
        if not MANAGED_POLICY_ARN.match(_text(policy)):
            found.append(f"instance_role_managed_policies: {policy} is not a managed policy ARN "
                         "(arn:aws:iam::...:policy/...).")
    if key and kms_key_form(key) != "key_arn":
        found.append(f"instance_role_kms_key_arn: {key} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID).")
    if bucket and not s3_bucket_name_ok(bucket):
        found.append(f"instance_role_log_bucket: {bucket} is not a valid S3 bucket name.")
    if prefix.startswith("/"):
        found.append(f"instance_role_log_prefix: drop the leading / from {prefix}.")
    if prefix and not bucket:
        found.append("instance_role_log_prefix is set without instance_role_log_bucket; set the bucket too.")
    bad_ids = [_text(instance) for instance in given["instance_ids"] or () if not INSTANCE_ID.match(_text(instance))]
    if bad_ids:
        found.append(f"instance_role_instance_ids: {', '.join(bad_ids)} are not EC2 instance ids (i-...).")
    return found


def logging_statements(inputs: dict, partition: str = "aws", account: str = "", region: str = "") -> list:
    """The statements the role's inline policy holds so that the SSM Agent can log sessions: put transcripts under
    the prefix of ``log_bucket`` and read its encryption, write to ``log_group``, use ``kms_key_arn``. Empty when
    sessions are not logged (the role then removes the inline policy)."""
    bucket, prefix = inputs.get("log_bucket") or "", inputs.get("log_prefix") or ""
    group, key = inputs.get("log_group") or "", inputs.get("kms_key_arn") or ""
    statements = []
    if bucket:
        bucket_arn = f"arn:{partition}:s3:::{bucket}"
        under = f"{prefix.rstrip('/')}/" if prefix else ""
        statements += [
            {"Sid": "SessionTranscriptsToS3", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": [f"{bucket_arn}/{under}*"]},
            {"Sid": "SessionBucketEncryption", "Effect": "Allow", "Action": ["s3:GetEncryptionConfiguration"],
             "Resource": [bucket_arn]},
        ]
    if group:
        statements += [
            {"Sid": "SessionLogsToCloudWatch", "Effect": "Allow",
             "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
             "Resource": [f"arn:{partition}:logs:{region}:{account}:log-group:{group}:*"]},
            {"Sid": "SessionLogGroupEncryption", "Effect": "Allow", "Action": ["logs:DescribeLogGroups"],
             "Resource": ["*"]},
        ]
    if key and bucket:
        statements.append({"Sid": "SessionEncryptionKeyThroughS3", "Effect": "Allow",
                           "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": [key],
                           "Condition": s3_key_condition(partition, region, bucket, prefix)})
    if key:
        statements.append({"Sid": "SessionEncryptionKey", "Effect": "Allow", "Action": ["kms:Decrypt"],
                           "Resource": [key], "Condition": dict(SESSION_STREAM_CONTEXT)})
    return statements


def _one(items: list, single: str, plural: str) -> str:
    return single if len(items) == 1 else plural


def _without_imdsv2(instances) -> list:
    return [instance["instance_id"] for instance in instances or ()
            if (instance.get("metadata_options") or {}).get("http_tokens") != "required"]


def target_problems(instances, ids=(), filters=None, region: str = "", mode: str = "instance_profile",
                    require_imdsv2: bool = False) -> list:
    """What the target instances do not allow, one sentence each: ids that are not a pending, running or stopped
    instance (of the filters, when given), and in Default Host Management mode, instances that do not require IMDSv2
    when the role may not require it. ``instances``: as amazon.aws.ec2_instance_info returns them."""
    found = []
    seen = {instance.get("instance_id") for instance in instances or ()}
    missing = [instance_id for instance_id in ids or () if instance_id not in seen]
    if missing:
        it = _one(missing, "it", "them")
        found.append(f"instance_role_instance_ids: {', '.join(missing)} {_one(missing, 'is', 'are')} not a pending, "
                     f"running or stopped instance in {region}"
                     f"{' matching instance_role_instance_filters' if filters else ''}; remove {it} or fix the ids.")
    optional = _without_imdsv2(instances)
    if mode == DHMC and not require_imdsv2 and optional:
        commands = "; ".join(f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} --http-tokens "
                             "required --http-endpoint enabled" for instance_id in optional)
        found.append(f"Default Host Management only manages instances that require IMDSv2, and {', '.join(optional)} "
                     f"{_one(optional, 'does', 'do')} not (HttpTokens is optional). Fix: set "
                     f"instance_role_dhmc_require_imdsv2 to true to let the role require it, or run {commands}.")
    return found


def would_attach(instances, replace: bool = False) -> list:
    """The target instances the profile would be attached to: those without a profile, then with ``replace``, those
    with another one (``instances`` as amazon.aws.ec2_instance_info returns them)."""
    bare = [instance["instance_id"] for instance in instances or ()
            if not (instance.get("iam_instance_profile") or {}).get("arn")]
    others = [instance["instance_id"] for instance in instances or () if instance["instance_id"] not in bare]
    return bare + (others if replace else [])


def verify_problems(role: dict, instances=None, role_name: str = "", service: str = "ec2.amazonaws.com",
                    policies=(), mode: str = "instance_profile", profile: str = "", profile_path: str = "/",
                    skipped=()) -> list:
    """What is still not as asked after the apply phase, one sentence each: the role (missing, not trusting
    ``service``, lacking some of ``policies``, not in the instance profile ``profile``), and the target instances
    (``instances`` read again) still without the profile, or, with Default Host Management, not requiring IMDSv2.
    ``skipped``: instances the role left alone on purpose (they have another profile)."""
    role = role or {}
    found = []
    lacking = [policy for policy in policies or () if policy not in
               [attached.get("policy_arn") for attached in role.get("managed_policies") or ()]]
    profiles = [entry.get("instance_profile_name") for entry in role.get("instance_profiles") or ()]
    clause = ("it does not exist" if not role
              else f"it does not trust {service}" if not trusts(role.get("assume_role_policy_document"), {service})
              else f"it lacks {', '.join(lacking)}" if lacking
              else f"it is not in the instance profile {profile}" if mode != DHMC and profile not in profiles
              else "")
    if clause:
        found.append(f"The role {role_name} is not as it should be: {clause}.")
    if mode == DHMC:
        optional = _without_imdsv2(instances)
        if optional:
            found.append(f"{', '.join(optional)} still do not require IMDSv2.")
        return found
    suffix = f":instance-profile{profile_path}{profile}"
    wrong = [instance["instance_id"] for instance in instances or () if instance["instance_id"] not in (skipped or ())
             and not ((instance.get("iam_instance_profile") or {}).get("arn") or "").endswith(suffix)]
    if wrong:
        found.append(f"{', '.join(wrong)} still lack the instance profile {profile}.")
    return found


class FilterModule:
    """The instance_role filters."""

    def filters(self):
        return {
            "instance_role_problems": problems,
            "instance_role_logging_statements": logging_statements,
            "instance_role_target_problems": target_problems,
            "instance_role_would_attach": would_attach,
            "instance_role_verify_problems": verify_problems,
        }
