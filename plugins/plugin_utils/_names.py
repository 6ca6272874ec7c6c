# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The name and reference rules the roles' filters check their inputs with, in one place: IAM and Linux names (a Run
As mapping is an IAM principal's name and a Linux user's), IAM policy names and ARNs, S3 bucket names, KMS key
references and EC2 ids."""

from __future__ import annotations

import re

# IAM user, group and role names.
IAM_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
# What Linux accepts as a user or group name (useradd's default NAME_REGEX, without the trailing $ of machine
# accounts), and the rule in words.
LINUX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
LINUX_NAME_RULE = "lower-case letters, digits, _ and -, starting with a letter or _, at most 32 characters"
# IAM managed policy names, paths, and managed policy ARNs (AWS's own or an account's).
IAM_POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
IAM_PATH = re.compile(r"^/([\x21-\x7e]*/)?$")
MANAGED_POLICY_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(aws|\d{12}):policy/.+$")

# What S3 accepts as a general purpose bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit, no two dots in a row, not an IP address, none of the reserved prefixes and suffixes.
S3_BUCKET_NAME = re.compile(r"^(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}"
                            r"[a-z0-9]$")
S3_RESERVED_SUFFIX = re.compile(r"(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$")

# The forms a KMS key may be given in: key ARN, alias ARN, key id (a UUID, or mrk- and 32 hex digits for a
# multi-Region key), alias name. AWS managed aliases (alias/aws/...) name keys nobody may use in a key policy.
_KMS_KEY_ID = r"(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_KMS_ARN = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:"
KMS_KEY_FORMS = {
    "key_arn": re.compile(rf"^{_KMS_ARN}key/{_KMS_KEY_ID}$"),
    "alias_arn": re.compile(rf"^{_KMS_ARN}alias/[a-zA-Z0-9/_-]{{1,250}}$"),
    "key_id": re.compile(rf"^{_KMS_KEY_ID}$"),
    "alias": re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$"),
}
KMS_CUSTOMER_ALIAS = re.compile(r"^alias/(?!aws/)[a-zA-Z0-9/_-]+$")

# Resource tags (S3 buckets among them): a key of 1-128 characters that does not start with aws: (AWS's own, in
# any case), a value of up to 256; letters, digits and spaces in any script, and + - = . _ : / @.
TAG_CHARACTERS = re.compile(r"^[\w\s+=.:/@-]*$")
TAG_RULE = ("a key of 1-128 and a value of up to 256 letters, digits, spaces and + - = . _ : / @, the key not starting "
            "with aws:")
S3_BUCKET_MAX_TAGS = 50

# EC2 ids.
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
VPC_ID = re.compile(r"^vpc-[0-9a-f]+$")


def s3_bucket_name_ok(name) -> bool:
    """Whether S3 accepts this as a general purpose bucket name."""
    return isinstance(name, str) and bool(S3_BUCKET_NAME.match(name)) and not S3_RESERVED_SUFFIX.search(name)


def kms_key_form(reference) -> str:
    """Which form a KMS key reference has: key_arn, alias_arn, key_id or alias; "" for none of them."""
    reference = reference.strip() if isinstance(reference, str) else ""
    return next((form for form, pattern in KMS_KEY_FORMS.items() if pattern.match(reference)), "")


def tag_ok(key, value) -> bool:
    """Whether AWS takes this tag (TAG_RULE): text (a number is sent as its text), within the lengths and characters,
    the key not aws:."""
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in (key, value)):
        return False
    key, value = str(key), str(value)
    return (1 <= len(key) <= 128 and len(value) <= 256 and bool(TAG_CHARACTERS.match(key))
            and bool(TAG_CHARACTERS.match(value)) and not key.lower().startswith("aws:"))
