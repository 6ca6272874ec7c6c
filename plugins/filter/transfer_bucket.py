# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The transfer_bucket role's computations: its inputs checked, the controller's policy, what would change on a
bucket as read, and what is still not as asked after the apply phase. The role's tasks only render what these
return. Each filter's documentation is in the .yml file of its name beside this one."""

from __future__ import annotations

import json
import re

from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import IAM_POLICY_NAME, kms_key_form, s3_bucket_name_ok
from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import S3_BUCKET_MAX_TAGS, TAG_RULE, tag_ok
from ansible_collections.bastionless.ssm.plugins.plugin_utils._role_inputs import role_inputs

DEFAULTS = {"name": "", "region": "", "kms_key_id": "", "expiration_days": 1, "controller_policy_name": "", "tags": {}}
EXAMPLE_NAME = "my-team-ssm-transfer"


def _suggested_name(name: str) -> str:
    """A name S3 would take, made from one it does not (the example in the message)."""
    suggested = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", re.sub(r"[^a-z0-9.-]", "-", name.lower()))[:63]
    return suggested or EXAMPLE_NAME


def _whole_days(days) -> bool:
    if isinstance(days, bool):
        return False
    if isinstance(days, int):
        return days >= 1
    return isinstance(days, str) and days.isdigit() and days.isascii() and int(days) >= 1


def problems(inputs: dict) -> list:
    """Every problem of the role's inputs that needs no AWS call, one sentence each naming the variable and the fix.
    ``inputs``: the role's variables without their ``transfer_bucket_`` prefix, ``region`` already resolved."""
    given = role_inputs(inputs, DEFAULTS, "transfer_bucket_problems")
    name, days, key = str(given["name"] or ""), given["expiration_days"], str(given["kms_key_id"] or "")
    policy_name = str(given["controller_policy_name"] or "")
    found = []
    if not given["region"]:
        found.append("transfer_bucket_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS "
                     "profile configuration; set transfer_bucket_region (or bastionless_region in the inventory).")
    if not name:
        found.append("transfer_bucket_name: empty; name the bucket the connection moves module files through (the "
                     "inventories of this collection set it as bastionless_transfer_bucket, which "
                     "ansible_aws_ssm_bucket_name reads).")
    elif not s3_bucket_name_ok(name):
        found.append(f"transfer_bucket_name: {name} is not a bucket name S3 accepts; use 3-63 lowercase letters, "
                     "digits, dots and hyphens, starting and ending with a letter or digit (for example "
                     f"{_suggested_name(name)}).")
    if not _whole_days(days):
        found.append(f"transfer_bucket_expiration_days: {days} is not a whole number of days of at least 1; the "
                     "lifecycle rule needs 1 or more (1 is enough: the connection deletes each file once it is moved, "
                     "the rule sweeps what an interrupted run left).")
    if key.strip() and not kms_key_form(key):
        found.append(f"transfer_bucket_kms_key_id: {key} is not a KMS key reference; give a key ARN "
                     "(arn:aws:kms:REGION:ACCOUNT:key/ID), a key id, an alias (alias/NAME) or an alias ARN, or leave it "
                     "empty for SSE-S3 (AES256).")
    if policy_name and not IAM_POLICY_NAME.match(policy_name):
        found.append(f"transfer_bucket_controller_policy_name: {policy_name} is not a name IAM accepts for a policy; "
                     "use 1-128 letters, digits and +=,.@_- (or leave it empty to create no policy).")
    found += _tags_problems(given["tags"])
    return found


def _tags_problems(tags) -> list:
    """S3 takes the bucket's tags only after amazon.aws.s3_bucket has created the bucket: a tag it refuses would leave
    a bucket without its encryption settings and lifecycle. Checked here, before any change."""
    if tags is None:
        return []
    if not isinstance(tags, dict):
        return [f"transfer_bucket_tags: {json.dumps(tags)} is not a dictionary of tag keys and values; give one such "
                "as {'Team': 'platform'}, or {} for none."]
    found = []
    if len(tags) > S3_BUCKET_MAX_TAGS:
        found.append(f"transfer_bucket_tags: {len(tags)} tags; S3 takes at most {S3_BUCKET_MAX_TAGS} on a bucket.")
    bad = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in tags.items() if not tag_ok(key, value)]
    if bad:
        found.append(f"transfer_bucket_tags: S3 refuses {', '.join(bad)}; each tag needs {TAG_RULE} (aws: is AWS's "
                     "own). Rename or remove it.")
    return found


def controller_policy(bucket_arn: str, key_arn: str = "", region: str = "") -> dict:
    """What amazon.aws.aws_ssm calls with the controller's credentials on the bucket (docs/transfer-bucket.md lists
    each call), and with a KMS key, the key's use through S3 in ``region``. The nodes need nothing: their requests go
    through URLs the controller presigns."""
    statements = [
        {"Sid": "FindTheTransferBucket", "Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
         "Resource": [bucket_arn]},
        {"Sid": "MoveModuleFilesThroughTheBucket", "Effect": "Allow",
         "Action": ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
         "Resource": [f"{bucket_arn}/*"]},
    ]
    if key_arn:
        statements.append({"Sid": "EncryptAndDecryptThroughS3", "Effect": "Allow",
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": [key_arn],
                           "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}})
    return {"Version": "2012-10-17", "Statement": statements}


def _listed(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def tls_policy_is_ours(policy, bucket_arn: str) -> bool:
    """Whether a bucket policy as read back (text, as S3 returns it, or already parsed) is the role's TLS-only
    policy: compared by meaning, since S3 may hand a policy back reformatted."""
    if isinstance(policy, str):
        try:
            policy = json.loads(policy or "{}")
        except ValueError:
            return False
    statements = policy.get("Statement") if isinstance(policy, dict) else None
    if not isinstance(statements, list) or len(statements) != 1 or not isinstance(statements[0], dict):
        return False
    statement = statements[0]
    return (statement.get("Sid") == "DenyRequestsWithoutTLS" and statement.get("Effect") == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and _listed(statement.get("Action", [])) == ["s3:*"]
            and sorted(_listed(statement.get("Resource", []))) == [bucket_arn, f"{bucket_arn}/*"]
            and json.dumps(statement.get("Condition", {}), sort_keys=True).lower()
            == '{"bool": {"aws:securetransport": "false"}}')


def _settings(bucket: dict) -> dict:
    """What the role checks on a bucket as amazon.aws.s3_bucket_info returns it."""
    rules = ((bucket.get("bucket_encryption") or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules") or [{}]
    ownership = ((bucket.get("bucket_ownership_controls") or {}).get("OwnershipControls") or {}).get("Rules") or [{}]
    block = (bucket.get("public_access_block") or {}).get("PublicAccessBlockConfiguration") or {}
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    return {"algorithm": default.get("SSEAlgorithm") or "", "key": default.get("KMSMasterKeyID") or "",
            "bucket_key": bool(rules[0].get("BucketKeyEnabled")),
            "blocked": len(block) == 4 and all(block.values()),
            "ownership": ownership[0].get("ObjectOwnership") or "",
            "versioned": (bucket.get("bucket_versioning") or {}).get("Status") == "Enabled",
            "policy": (bucket.get("bucket_policy") or {}).get("Policy") or ""}


def _key_differs(settings: dict, key_arn: str) -> bool:
    return settings["key"] not in (key_arn, key_arn.split("/")[-1])


def changes(bucket: dict, wanted: dict, tags=None) -> list:
    """What the apply phase would change on an existing bucket (``bucket`` as read in preflight), one phrase each;
    empty when it is as wanted. ``wanted``: the role's ``transfer_bucket_result`` (its arn, encryption and
    kms_key_arn); ``tags``: the tags the bucket should carry (others are kept)."""
    now = _settings(bucket or {})
    kms, key_arn = wanted["encryption"] == "aws:kms", wanted.get("kms_key_arn") or ""
    found = []
    if now["algorithm"] != wanted["encryption"]:
        found.append(f"encryption {now['algorithm'] or 'none'} to {wanted['encryption']}")
    if kms and _key_differs(now, key_arn):
        found.append(f"encryption key to {key_arn}")
    if kms and not now["bucket_key"]:
        found.append("bucket key on")
    if not now["blocked"]:
        found.append("block public access")
    if now["ownership"] != "BucketOwnerEnforced":
        found.append("object ownership to BucketOwnerEnforced")
    if now["versioned"]:
        found.append("suspend versioning")
    if not tls_policy_is_ours(now["policy"], wanted["arn"]):
        found.append("the TLS-only bucket policy")
    current_tags = (bucket or {}).get("bucket_tagging") or {}
    if any(current_tags.get(key) != value for key, value in (tags or {}).items()):
        found.append("tags")
    return found


def verify_problems(bucket: dict, wanted: dict, rule_id: str = "bastionless-ssm-transfer-expiry") -> list:
    """What is still not as asked after the apply phase, one clause each: encryption, public access, ownership,
    versioning, the TLS-only policy and the role's lifecycle rule ``rule_id``. ``bucket``: as
    amazon.aws.s3_bucket_info returns it (empty when it does not exist); ``wanted``: ``transfer_bucket_result``."""
    if not bucket:
        return ["it does not exist"]
    now = _settings(bucket)
    days = int(wanted["expiration_days"])
    found = []
    if now["algorithm"] != wanted["encryption"]:
        found.append(f"its default encryption is {now['algorithm'] or 'none'}")
    if wanted["encryption"] == "aws:kms" and _key_differs(now, wanted.get("kms_key_arn") or ""):
        found.append(f"it is not encrypted with {wanted['kms_key_arn']}")
    if not now["blocked"]:
        found.append("it does not block public access")
    if now["ownership"] != "BucketOwnerEnforced":
        found.append(f"its object ownership is {now['ownership'] or 'unset'}")
    if now["versioned"]:
        found.append("versioning is on")
    if not tls_policy_is_ours(now["policy"], wanted["arn"]):
        found.append("its policy is not the TLS-only one")
    rules = (bucket.get("bucket_lifecycle_configuration") or {}).get("Rules") or []
    rule = next((rule for rule in rules if rule.get("ID") == rule_id), {})
    if not (rule.get("Status") == "Enabled" and (rule.get("Expiration") or {}).get("Days") == days
            and (rule.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation") == days):
        found.append(f"its lifecycle rule {rule_id} is missing or different")
    return found


class FilterModule:
    """The transfer_bucket filters."""

    def filters(self):
        return {
            "transfer_bucket_problems": problems,
            "transfer_bucket_controller_policy": controller_policy,
            "transfer_bucket_changes": changes,
            "transfer_bucket_verify_problems": verify_problems,
        }
