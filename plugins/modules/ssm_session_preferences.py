#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_session_preferences
version_added: 0.1.0
short_description: Manage the Session Manager preferences document
description:
  - Manages the Session Manager preferences of an account and region, which AWS keeps in the Session document
    C(SSM-SessionManagerRunShell) (document type C(Session), C(schemaVersion) C(1.0), C(sessionType)
    C(Standard_Stream)); or, with O(name), another Session document that connections select with their
    C(DocumentName).
  - Each option maps to one input of the document. An option that is not set leaves that input as it is, so
    one input can be changed without touching the others. Inputs the existing document leaves out count as
    AWS's defaults.
  - A missing document is created with C(CreateDocument). An existing one is taken over, whoever created it
    and whatever it holds; it is changed only when its default version's inputs differ from the wanted ones,
    with C(UpdateDocument) on C($LATEST) followed by C(UpdateDocumentDefaultVersion) to the new version.
  - The document is never deleted, as AWS creates it again from the console's Session Manager preferences;
    O(state=absent) puts AWS's defaults back instead.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  name:
    description:
      - The name of the Session document.
      - The default, V(SSM-SessionManagerRunShell), is the document AWS reads for every session that names no
        document (C(aws ssm start-session) without C(--document-name), the console, and the
        M(amazon.aws.aws_ssm) connection unless it sets C(ansible_aws_ssm_document)).
      - Another name makes a custom Session document, which a connection has to select.
    type: str
    default: SSM-SessionManagerRunShell
  state:
    description:
      - V(present) makes the document's inputs those the options ask for.
      - V(absent) restores AWS's defaults (no logging, no Run As, a 20 minute idle timeout, no maximum session
        duration, empty shell profiles); the other input options are then ignored. A document that does not
        exist already behaves as AWS's defaults and is not created.
    type: str
    choices: [present, absent]
    default: present
  s3_bucket_name:
    description:
      - C(s3BucketName), the S3 bucket each session's transcript is written to when the session ends.
      - V("") turns logging to S3 off.
      - It must be a name AWS accepts for a bucket, and the bucket must exist (C(HeadBucket)). With
        O(state=present) the module fails, changing nothing, when it does not, as every session would then fail.
    type: str
  s3_key_prefix:
    description:
      - C(s3KeyPrefix), the key prefix of the transcripts in O(s3_bucket_name).
    type: str
  s3_encryption_enabled:
    description:
      - C(s3EncryptionEnabled). When V(true), the SSM Agent refuses to start a logged session unless
        O(s3_bucket_name) is encrypted (every S3 bucket has been, with SSE-S3 at least, since January 2023).
    type: bool
  cloudwatch_log_group_name:
    description:
      - C(cloudWatchLogGroupName), the CloudWatch Logs group session transcripts are sent to, in a stream named
        after each session.
      - V("") turns logging to CloudWatch Logs off.
      - The log group must exist in the region; with O(state=present) the module fails, changing nothing, when it
        does not.
    type: str
  cloudwatch_encryption_enabled:
    description:
      - C(cloudWatchEncryptionEnabled). When V(true), the SSM Agent refuses to start a logged session unless the
        log group has a KMS key.
    type: bool
  cloudwatch_streaming_enabled:
    description:
      - C(cloudWatchStreamingEnabled). V(true) streams the session to the log group as it goes; V(false) sends
        the transcript when the session ends.
    type: bool
  kms_key_id:
    description:
      - C(kmsKeyId), the KMS key that encrypts the session's data between the client and the node, on top of
        TLS. Both the user (C(kms:GenerateDataKey)) and the node's role (C(kms:Decrypt)) need to be allowed to
        use it.
      - A key ID (a UUID, or C(mrk-...) for a multi-Region key), an alias (C(alias/...)), or a key or alias
        ARN. The key is looked up with KMS C(DescribeKey) before anything changes; it must exist in the
        module's region, be enabled and be a symmetric encryption key.
      - V("") turns this encryption off.
    type: str
  idle_session_timeout:
    description:
      - C(idleSessionTimeout), the minutes without activity after which Session Manager ends a session, from
        V(1) to V(60). It is stored as a string. AWS's default is 20.
    type: int
  max_session_duration:
    description:
      - C(maxSessionDuration), the minutes after which Session Manager ends a session whatever happens, from V(1)
        to V(1440). It is stored as a string.
      - V(0) means no maximum (the input is stored empty), which is AWS's default.
    type: int
  run_as_enabled:
    description:
      - C(runAsEnabled). When V(true), Linux and macOS sessions run as the OS user named by the caller's IAM
        C(SSMSessionRunAs) tag or, without one, O(run_as_default_user), instead of C(ssm-user); the user must
        exist on the node, or the session fails to start.
      - With V(true) and an empty O(run_as_default_user), callers without the tag cannot start a session; the
        module warns about it.
    type: bool
  run_as_default_user:
    description:
      - C(runAsDefaultUser), the OS user of sessions when O(run_as_enabled) is V(true) and the caller has no
        C(SSMSessionRunAs) tag.
      - It must be a name Linux accepts (C(^[a-z_][a-z0-9_-]{0,31}$)), or V("").
    type: str
  shell_profile:
    description:
      - C(shellProfile), commands each shell session runs when it starts, per platform.
      - A platform that is not set keeps its current profile.
    type: dict
    suboptions:
      linux:
        description:
          - Commands for sessions on Linux and macOS nodes, run in the session's shell (for example
            V(exec bash -l), or V(cd ~ && umask 077)). Several lines run one after another.
        type: str
      windows:
        description:
          - Commands for sessions on Windows nodes, run in PowerShell.
        type: str
  prune_versions:
    description:
      - Keep at most this many versions of the document, deleting the oldest ones that are not the default version
        (C(DeleteDocument) with C(DocumentVersion)). The default version is always kept.
      - When not set, no version is deleted; AWS keeps up to 1000 versions of a document and refuses updates after
        that.
      - The versions are listed with C(ListDocumentVersions) before anything changes.
    type: int
attributes:
  check_mode:
    description:
      - Reports whether the document would be created or updated, and changes nothing.
      - The returned RV(document) is then a prediction; its version numbers assume a new version is created.
    support: full
  diff_mode:
    description: Returns the document's inputs before and after (V({}) before a document is created).
    support: full
notes:
  - No module of amazon.aws or community.aws manages this document. Generic document tools fail on an account
    whose C(SSM-SessionManagerRunShell) already exists (AWS creates it as soon as someone opens the preferences
    in the console) with C(DocumentAlreadyExists); this module takes the existing document over, and also
    falls back to an update when a concurrent run creates the document first.
  - When an update would reproduce the content of an existing version (AWS answers C(DuplicateDocumentContent)),
    that version is made the default one instead.
  - The document's C(description) is kept as it is; a new document gets AWS's own,
    C(Document to hold regional settings for Session Manager).
  - A document of another type than C(Session) under O(name) is an error, as AWS cannot change a document's type.
  - Session Manager reads these preferences when a session starts; sessions already running keep theirs.
  - Needs C(ssm:DescribeDocument), C(ssm:GetDocument), C(ssm:CreateDocument), C(ssm:UpdateDocument),
    C(ssm:UpdateDocumentDefaultVersion), and C(kms:DescribeKey) with O(kms_key_id); with O(prune_versions) also
    C(ssm:ListDocumentVersions) and C(ssm:DeleteDocument).
seealso:
  - name: Session document schema
    description: The inputs of a Session document and what Session Manager does with them.
    link: https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-schema.html
  - name: Create a Session Manager preferences document (command line)
    description: The preferences document and its default inputs.
    link: https://docs.aws.amazon.com/systems-manager/latest/userguide/getting-started-create-preferences-cli.html
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# These run as they are against the offline lab (tests/lab), which answers for us-east-1.
- name: Create a KMS key for session data and transcripts
  amazon.aws.kms_key:
    alias: alias/session-manager
    description: Session Manager session data and transcripts
  register: session_key

- name: Create the bucket for session transcripts
  amazon.aws.s3_bucket:
    name: example-session-transcripts
    encryption: aws:kms
    encryption_key_id: "{{ session_key.key_arn }}"

- name: Create the log group for session transcripts
  amazon.aws.cloudwatchlogs_log_group:
    log_group_name: /ssm/sessions
    kms_key_id: "{{ session_key.key_arn }}"

- name: Log every session to S3 and CloudWatch Logs, encrypted with the key
  bastionless.ssm.ssm_session_preferences:
    s3_bucket_name: example-session-transcripts
    s3_key_prefix: sessions
    s3_encryption_enabled: true
    cloudwatch_log_group_name: /ssm/sessions
    cloudwatch_encryption_enabled: true
    cloudwatch_streaming_enabled: true
    kms_key_id: alias/session-manager
  register: __preferences

- name: Show the preferences now in force
  ansible.builtin.debug:
    var: __preferences.document.inputs

- name: End idle sessions after 15 minutes, leaving every other preference as it is
  bastionless.ssm.ssm_session_preferences:
    idle_session_timeout: 15

- name: Run sessions as ops (or as the caller's SSMSessionRunAs tag), in a login shell, for 8 hours at most
  bastionless.ssm.ssm_session_preferences:
    run_as_enabled: true
    run_as_default_user: ops
    max_session_duration: 480
    shell_profile:
      linux: exec bash -l

- name: A custom Session document for break-glass sessions
  bastionless.ssm.ssm_session_preferences:
    name: BreakGlass-Shell
    idle_session_timeout: 5
    max_session_duration: 60
    run_as_enabled: false
    cloudwatch_log_group_name: /ssm/sessions

# A connection selects the custom document, for example with the amazon.aws.aws_ssm variable
# ansible_aws_ssm_document: BreakGlass-Shell, or with aws ssm start-session --document-name BreakGlass-Shell.

- name: Restore AWS's default preferences
  bastionless.ssm.ssm_session_preferences:
    state: absent
"""

RETURN = r"""
document:
  description:
    - The Session document after the change, predicted in check mode.
    - V({}) when O(state=absent) and the document does not exist.
  returned: always
  type: dict
  contains:
    name:
      description: The name of the document.
      type: str
      sample: SSM-SessionManagerRunShell
    default_version:
      description: The default version of the document, the one Session Manager reads.
      type: str
      sample: "3"
    latest_version:
      description: The latest version of the document.
      type: str
      sample: "3"
    document_version:
      description: The version whose inputs are returned, the default one.
      type: str
      sample: "3"
    inputs:
      description:
        - The inputs of the default version, under the document's own keys (the camelCase names of the Session
          document schema, not snake_case), with booleans as booleans and the timeouts as strings, as AWS
          stores them.
        - Inputs the document leaves out are shown with AWS's defaults; inputs the module does not know are
          kept and shown as they are.
      type: dict
      sample:
        s3BucketName: example-session-transcripts
        s3KeyPrefix: sessions
        s3EncryptionEnabled: true
        cloudWatchLogGroupName: /ssm/sessions
        cloudWatchEncryptionEnabled: true
        cloudWatchStreamingEnabled: true
        idleSessionTimeout: "15"
        maxSessionDuration: ""
        kmsKeyId: alias/session-manager
        runAsEnabled: false
        runAsDefaultUser: ""
        shellProfile:
          linux: ""
          windows: ""
pruned_versions:
  description: The versions deleted (in check mode, that would be deleted) because of O(prune_versions), oldest first.
  returned: when O(prune_versions) is set
  type: list
  elements: str
  sample: ["1", "2"]
"""

import json
import re
from copy import deepcopy
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

try:
    import yaml

    HAS_YAML = True
except ImportError:
    HAS_YAML = False

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

DEFAULT_NAME = "SSM-SessionManagerRunShell"
AWS_DESCRIPTION = "Document to hold regional settings for Session Manager"
SCHEMA_VERSION = "1.0"
SESSION_TYPE = "Standard_Stream"

# AWS's defaults for a preferences document, in the order AWS writes them.
DEFAULT_INPUTS: Dict[str, Any] = {
    "s3BucketName": "",
    "s3KeyPrefix": "",
    "s3EncryptionEnabled": True,
    "cloudWatchLogGroupName": "",
    "cloudWatchEncryptionEnabled": True,
    "cloudWatchStreamingEnabled": True,
    "idleSessionTimeout": "20",
    "maxSessionDuration": "",
    "kmsKeyId": "",
    "runAsEnabled": False,
    "runAsDefaultUser": "",
    "shellProfile": {"windows": "", "linux": ""},
}

# (option, input, kind): kind says how the option's value is written into the document.
INPUT_OPTIONS: Tuple[Tuple[str, str, str], ...] = (
    ("s3_bucket_name", "s3BucketName", "str"),
    ("s3_key_prefix", "s3KeyPrefix", "str"),
    ("s3_encryption_enabled", "s3EncryptionEnabled", "bool"),
    ("cloudwatch_log_group_name", "cloudWatchLogGroupName", "str"),
    ("cloudwatch_encryption_enabled", "cloudWatchEncryptionEnabled", "bool"),
    ("cloudwatch_streaming_enabled", "cloudWatchStreamingEnabled", "bool"),
    ("kms_key_id", "kmsKeyId", "str"),
    ("idle_session_timeout", "idleSessionTimeout", "minutes"),
    ("max_session_duration", "maxSessionDuration", "minutes"),
    ("run_as_enabled", "runAsEnabled", "bool"),
    ("run_as_default_user", "runAsDefaultUser", "str"),
    ("shell_profile", "shellProfile", "profile"),
)
INPUT_KINDS = {key: kind for _option, key, kind in INPUT_OPTIONS}
PROFILE_PLATFORMS = ("windows", "linux")

IDLE_RANGE = (1, 60)
MAX_DURATION_RANGE = (1, 1440)

DOCUMENT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{3,128}$")
RESERVED_NAME_PREFIXES = ("aws-", "amazon", "amzn")
LINUX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")
KEY_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
KEY_MRK = re.compile(r"^mrk-[0-9a-fA-F]{32}$")
KEY_ALIAS = re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$")
KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<resource>key/.+|alias/.+)$")
BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
BUCKET_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


class AnsibleSSMError(AnsibleAWSError):
    pass


class SSMDocumentErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code(["InvalidDocument", "InvalidDocumentVersion"])


class KMSKeyErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code("NotFoundException")


class LogsErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMError


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers: validation, the inputs, the plan.
# ---------------------------------------------------------------------------------------------------------------


def missing_destination(option: str, name: str, region: Optional[str]) -> str:
    """The message for a transcripts destination that does not exist."""
    what = f"the bucket {name} does not exist" if option == "s3_bucket_name" else \
        f"the log group {name} does not exist in {region}"
    return (f"{option}: {what}, and every session would fail while the preferences name it; "
            f"create it first (bastionless.ssm.session_logging does), fix the name, or set {option} to \"\" to turn "
            "that logging off. Nothing was changed.")


def bucket_name_problem(name: str) -> Optional[str]:
    """Why AWS would refuse ``name`` as a bucket name; None when it is fine."""
    if not 3 <= len(name) <= 63:
        return f"it is {len(name)} characters long, not 3 to 63"
    if not BUCKET_CHARS.match(name):
        return "it may hold only lowercase letters, digits, dots and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "it must start and end with a letter or a digit"
    if ".." in name:
        return "it may not hold two dots in a row"
    if BUCKET_IP.match(name):
        return "it may not be formatted as an IP address"
    for prefix in BUCKET_PREFIXES:
        if name.startswith(prefix):
            return f"AWS reserves the prefix {prefix}"
    for suffix in BUCKET_SUFFIXES:
        if name.endswith(suffix):
            return f"AWS reserves the suffix {suffix}"
    return None


def kms_key_problem(key_id: str, region: Optional[str]) -> Optional[str]:
    """Why ``key_id`` cannot name a KMS key for these preferences; None when its form is fine."""
    if KEY_UUID.match(key_id) or KEY_MRK.match(key_id) or KEY_ALIAS.match(key_id):
        return None
    match = KEY_ARN.match(key_id)
    if not match:
        return (
            f"kms_key_id: {key_id!r} is not a KMS key reference; give a key ID (a UUID, or mrk-... for a "
            "multi-Region key), an alias (alias/...), or a key or alias ARN."
        )
    if region and match.group("region") != region:
        return (
            f"kms_key_id: {key_id} is in {match.group('region')}, but these preferences are for {region}; "
            f"Session Manager needs a key of the same region, so use a key in {region}."
        )
    return None


def validate_params(params: Dict[str, Any], region: Optional[str] = None) -> List[str]:
    """Every problem with the options, each as one message naming the option and the fix; [] when fine."""
    errors = []
    name = params.get("name") or ""
    if not DOCUMENT_NAME.match(name) or name.lower().startswith(RESERVED_NAME_PREFIXES):
        errors.append(
            f"name: {name!r} is not a document name AWS accepts; use 3 to 128 letters, digits, '_', '-' and '.', "
            "not starting with aws-, amazon or amzn."
        )
    prune = params.get("prune_versions")
    if prune is not None and prune < 1:
        errors.append(f"prune_versions must be at least 1 (the default version is always kept), not {prune}.")
    if params.get("state") == "absent":
        return errors

    idle = params.get("idle_session_timeout")
    if idle is not None and not IDLE_RANGE[0] <= idle <= IDLE_RANGE[1]:
        errors.append(
            f"idle_session_timeout must be from {IDLE_RANGE[0]} to {IDLE_RANGE[1]} minutes, the range AWS accepts, "
            f"not {idle}; set a value in that range."
        )
    longest = params.get("max_session_duration")
    if longest is not None and longest != 0 and not MAX_DURATION_RANGE[0] <= longest <= MAX_DURATION_RANGE[1]:
        errors.append(
            f"max_session_duration must be from {MAX_DURATION_RANGE[0]} to {MAX_DURATION_RANGE[1]} minutes, the "
            f"range AWS accepts, or 0 for no maximum, not {longest}; set a value in that range."
        )
    bucket = params.get("s3_bucket_name")
    if bucket:
        problem = bucket_name_problem(bucket)
        if problem:
            errors.append(
                f"s3_bucket_name: {bucket!r} is not a bucket name AWS accepts: {problem}; use 3 to 63 lowercase "
                "letters, digits, dots and hyphens, starting and ending with a letter or a digit (or '' for no S3 "
                "logging)."
            )
    group = params.get("cloudwatch_log_group_name")
    if group and not LOG_GROUP.match(group):
        errors.append(
            f"cloudwatch_log_group_name: {group!r} is not a log group name AWS accepts; use up to 512 letters, "
            "digits and the characters _ - / . # (or '' for no CloudWatch logging)."
        )
    key = params.get("kms_key_id")
    if key:
        problem = kms_key_problem(key, region)
        if problem:
            errors.append(problem)
    user = params.get("run_as_default_user")
    if user and not LINUX_USER.match(user):
        errors.append(
            f"run_as_default_user: {user!r} is not a user name Linux accepts; it must match "
            f"{LINUX_USER.pattern} (a lowercase letter or _ first, then up to 31 lowercase letters, digits, _ "
            "and -), or be '' for none."
        )
    return errors


def ignored_with_absent(params: Dict[str, Any]) -> List[str]:
    """The input options set although state=absent ignores them."""
    if params.get("state") != "absent":
        return []
    return [option for option, _key, _kind in INPUT_OPTIONS if params.get(option) is not None]


def normalise_value(key: str, value: Any) -> Any:
    """An input's value as the module writes it: booleans as booleans, timeouts and names as strings."""
    kind = INPUT_KINDS.get(key)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "false"):
            return str(value).strip().lower() == "true"
        return value
    if kind == "profile":
        profile = deepcopy(DEFAULT_INPUTS["shellProfile"])
        if isinstance(value, dict):
            for platform, commands in value.items():
                profile[platform] = "" if commands is None else commands
        return profile
    if kind == "minutes":
        return "" if value is None else str(value).strip()
    if kind == "str":
        return "" if value is None else str(value)
    return value


def effective_inputs(inputs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A document's inputs with AWS's defaults for those it leaves out; unknown inputs are kept as they are."""
    result = deepcopy(DEFAULT_INPUTS)
    for key, value in (inputs if isinstance(inputs, dict) else {}).items():
        result[key] = normalise_value(key, value)
    return result


def option_value(kind: str, value: Any) -> Any:
    """An option's value as the document stores it."""
    if kind == "bool":
        return bool(value)
    if kind == "minutes":
        return "" if value == 0 else str(value)
    return value


def wanted_inputs(current: Dict[str, Any], params: Dict[str, Any]) -> Dict[str, Any]:
    """The effective ``current`` inputs with the options that are set; unset options leave their input alone."""
    wanted = deepcopy(current)
    for option, key, kind in INPUT_OPTIONS:
        value = params.get(option)
        if value is None:
            continue
        if kind == "profile":
            profile = deepcopy(wanted.get(key)) if isinstance(wanted.get(key), dict) else {}
            for platform in PROFILE_PLATFORMS:
                if value.get(platform) is not None:
                    profile[platform] = value[platform]
            wanted[key] = normalise_value(key, profile)
        else:
            wanted[key] = option_value(kind, value)
    return wanted


def parse_content(content: str, document_format: Optional[str]) -> Optional[Dict[str, Any]]:
    """A document's content as a dict; None when it cannot be read as one (it is then simply replaced)."""
    if document_format == "YAML":
        if not HAS_YAML:
            return None
        try:
            parsed = yaml.safe_load(content)
        except yaml.YAMLError:
            return None
    else:
        try:
            parsed = json.loads(content)
        except ValueError:
            return None
    return parsed if isinstance(parsed, dict) else None


def content_inputs(content: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    inputs = (content or {}).get("inputs")
    return inputs if isinstance(inputs, dict) else None


def content_matches(content: Optional[Dict[str, Any]], wanted: Dict[str, Any]) -> bool:
    """Whether a parsed document already is a preferences document with the wanted inputs."""
    if not isinstance(content, dict):
        return False
    if str(content.get("schemaVersion")) != SCHEMA_VERSION or content.get("sessionType") != SESSION_TYPE:
        return False
    return effective_inputs(content_inputs(content)) == wanted


def render_content(inputs: Dict[str, Any], description: Optional[str] = None) -> str:
    """The JSON content of a preferences document with these inputs."""
    document = {
        "schemaVersion": SCHEMA_VERSION,
        "description": description if description is not None else AWS_DESCRIPTION,
        "sessionType": SESSION_TYPE,
        "inputs": inputs,
    }
    return json.dumps(document, indent=4)


def run_as_warning(inputs: Dict[str, Any]) -> Optional[str]:
    if inputs.get("runAsEnabled") is True and not inputs.get("runAsDefaultUser"):
        return (
            "run_as_enabled is true and run_as_default_user is empty: sessions run as the OS user named by the "
            "caller's SSMSessionRunAs IAM tag, and callers without that tag cannot start a session."
        )
    return None


def plan_prune(versions: List[str], default_version: str, keep: Optional[int]) -> List[str]:
    """The versions to delete, oldest first, so that at most ``keep`` remain; the default is always kept."""
    if keep is None or len(versions) <= keep:
        return []
    candidates = sorted((v for v in versions if v != default_version), key=_version_key)
    return candidates[: len(versions) - keep]


def _version_key(version: str) -> Tuple[int, str]:
    return (int(version), version) if str(version).isdigit() else (-1, str(version))


def next_version(latest: Optional[str]) -> str:
    return str(int(latest) + 1) if latest and str(latest).isdigit() else "1"


def document_view(name: str, default_version: Optional[str], latest_version: Optional[str],
                  inputs: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "name": name,
        "default_version": default_version,
        "latest_version": latest_version,
        "document_version": default_version,
        "inputs": inputs,
    }


def plan(current: Optional[Dict[str, Any]], params: Dict[str, Any]) -> Tuple[bool, Optional[Dict[str, Any]]]:
    """(whether the content changes, the wanted effective inputs or None when there is nothing to want).

    ``current`` is None for a missing document, else a dict with ``content`` (parsed, or None).
    """
    if params["state"] == "absent":
        if current is None:
            return False, None
        wanted = deepcopy(DEFAULT_INPUTS)
    else:
        base = effective_inputs(content_inputs(current["content"])) if current else deepcopy(DEFAULT_INPUTS)
        wanted = wanted_inputs(base, params)
    if current is None:
        return True, wanted
    return not content_matches(current["content"], wanted), wanted


# ---------------------------------------------------------------------------------------------------------------
# AWS calls, one each.
# ---------------------------------------------------------------------------------------------------------------


@SSMDocumentErrorHandler.list_error_handler("describe document")
@AWSRetry.jittered_backoff()
def describe_document(client, name: str) -> Optional[Dict[str, Any]]:
    return client.describe_document(Name=name)["Document"]


@SSMDocumentErrorHandler.list_error_handler("get document")
@AWSRetry.jittered_backoff()
def get_document(client, name: str, version: str) -> Optional[Dict[str, Any]]:
    return client.get_document(Name=name, DocumentVersion=version)


@SSMDocumentErrorHandler.common_error_handler("list document versions")
@AWSRetry.jittered_backoff()
def list_document_versions(client, name: str) -> List[Dict[str, Any]]:
    paginator = client.get_paginator("list_document_versions")
    return paginator.paginate(Name=name).build_full_result()["DocumentVersions"]


@SSMDocumentErrorHandler.common_error_handler("create document")
@AWSRetry.jittered_backoff()
def create_document(client, name: str, content: str) -> Optional[Dict[str, Any]]:
    """The new document's description; None when the document exists already (created meanwhile)."""
    try:
        return client.create_document(Name=name, Content=content, DocumentType="Session",
                                      DocumentFormat="JSON")["DocumentDescription"]
    except is_boto3_error_code("DocumentAlreadyExists"):
        return None


@SSMDocumentErrorHandler.common_error_handler("update document")
@AWSRetry.jittered_backoff()
def update_document(client, name: str, content: str) -> Optional[Dict[str, Any]]:
    """The new version's description; None when a version with this content exists already."""
    try:
        return client.update_document(Name=name, Content=content, DocumentVersion="$LATEST",
                                      DocumentFormat="JSON")["DocumentDescription"]
    except is_boto3_error_code("DuplicateDocumentContent"):
        return None
    except is_boto3_error_code("DocumentVersionLimitExceeded") as e:
        raise AnsibleSSMError(
            message=f"{name} has as many versions as AWS allows (1000), so it takes no new one; delete old versions "
            f"(aws ssm delete-document --name {name} --document-version <version>) and run the task again.",
            exception=e,
        ) from e


@SSMDocumentErrorHandler.common_error_handler("update document default version")
@AWSRetry.jittered_backoff()
def update_default_version(client, name: str, version: str) -> None:
    client.update_document_default_version(Name=name, DocumentVersion=version)


@SSMDocumentErrorHandler.deletion_error_handler("delete document version")
@AWSRetry.jittered_backoff()
def delete_document_version(client, name: str, version: str) -> bool:
    client.delete_document(Name=name, DocumentVersion=version)
    return True


@KMSKeyErrorHandler.list_error_handler("describe KMS key")
@AWSRetry.jittered_backoff()
def describe_key(client, key_id: str) -> Optional[Dict[str, Any]]:
    return client.describe_key(KeyId=key_id)["KeyMetadata"]


@AWSRetry.jittered_backoff()
def head_bucket(client, bucket: str) -> None:
    client.head_bucket(Bucket=bucket)


def bucket_exists(client, bucket: str) -> bool:
    """False only when S3 says there is no such bucket (another region, or no right to read it: it exists)."""
    try:
        head_bucket(client, bucket)
    except botocore.exceptions.ClientError as e:
        return str(e.response.get("Error", {}).get("Code", "")) not in ("404", "NoSuchBucket", "NotFound")
    return True


@LogsErrorHandler.common_error_handler("describe log groups")
@AWSRetry.jittered_backoff()
def log_group_exists(client, name: str) -> bool:
    groups = client.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return any(group.get("logGroupName") == name for group in groups)


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing the document.
# ---------------------------------------------------------------------------------------------------------------


def check_destinations(module: AnsibleAWSModule, params: Dict[str, Any]) -> None:
    """Fail before any change when the transcripts bucket or log group the preferences name does not exist."""
    problems = []
    bucket, group = params.get("s3_bucket_name"), params.get("cloudwatch_log_group_name")
    if bucket and not bucket_exists(module.client("s3"), bucket):
        problems.append(missing_destination("s3_bucket_name", bucket, module.region))
    if group and not log_group_exists(module.client("logs"), group):
        problems.append(missing_destination("cloudwatch_log_group_name", group, module.region))
    if problems:
        raise AnsibleSSMError(message=" ".join(problems))


def check_kms_key(client, key_id: str, region: Optional[str]) -> None:
    """Fail before any change unless the key exists, is enabled and encrypts symmetrically."""
    key = describe_key(client, key_id)
    if key is None:
        fix = "fix the alias" if "alias/" in key_id else "fix the key ID"
        raise AnsibleSSMError(message=f"kms_key_id: {key_id} does not exist in {region}; create the key or {fix}.")
    state = key.get("KeyState", "Enabled")
    if state != "Enabled":
        raise AnsibleSSMError(
            message=f"kms_key_id: {key_id} ({key.get('KeyId')}) is {state} in {region}; enable it or use another key."
        )
    spec = key.get("KeySpec") or key.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    usage = key.get("KeyUsage", "ENCRYPT_DECRYPT")
    if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
        raise AnsibleSSMError(
            message=f"kms_key_id: {key_id} is a {spec} key for {usage}; Session Manager needs a symmetric "
            "encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT), so use one of those."
        )


def read_document(client, name: str) -> Optional[Dict[str, Any]]:
    """The document's versions and its default version's parsed content; None when it does not exist."""
    described = describe_document(client, name)
    if described is None:
        return None
    if described.get("DocumentType") != "Session":
        raise AnsibleSSMError(
            message=f"name: {name} is a {described.get('DocumentType')} document, not a Session document, and AWS "
            "cannot change a document's type; delete that document or choose another name."
        )
    default_version = described.get("DefaultVersion") or described.get("DocumentVersion")
    got = get_document(client, name, default_version) or {}
    raw = got.get("Content", "")
    return {
        "default_version": default_version,
        "latest_version": described.get("LatestVersion") or default_version,
        "description": described.get("Description"),
        "raw": raw,
        "content": parse_content(raw, got.get("DocumentFormat", "JSON")),
    }


def version_with_content(client, name: str, latest: str, content: str) -> Optional[str]:
    """The newest version whose content is ``content`` (AWS refused it as a duplicate), looking from the latest
    version down; None when no version has it."""
    wanted = parse_content(content, "JSON")
    for number in range(int(latest), 0, -1) if str(latest).isdigit() else []:
        got = get_document(client, name, str(number))
        if got is None:
            continue  # a deleted version
        if got.get("Content") == content or parse_content(got.get("Content", ""), got.get("DocumentFormat")) == wanted:
            return str(number)
    return None


def create_preferences(client, name: str, content: str) -> Optional[Dict[str, Any]]:
    """Create the document; returns it as read back, or None when it exists already (created meanwhile)."""
    if create_document(client, name, content) is None:
        return None
    return read_document(client, name)


def update_preferences(client, name: str, current: Dict[str, Any], content: str) -> Dict[str, Any]:
    """Make ``content`` the default version of the existing document; returns the document as read back.

    A new version is made the default one; when AWS refuses the content as a duplicate, the version that already
    has it is made the default one instead.
    """
    updated = update_document(client, name, content)
    if updated is not None:
        update_default_version(client, name, updated["DocumentVersion"])
        return read_document(client, name)
    latest = (describe_document(client, name) or {}).get("LatestVersion") or current["latest_version"]
    version = version_with_content(client, name, latest, content)
    if version is None:
        raise AnsibleSSMError(
            message=f"UpdateDocument refused the content of {name} as a duplicate (DuplicateDocumentContent), but "
            f"none of versions 1 to {latest} holds it."
        )
    update_default_version(client, name, version)
    return read_document(client, name)


def write_preferences(client, name: str, params: Dict[str, Any], current: Optional[Dict[str, Any]],
                      wanted: Dict[str, Any]) -> Tuple[bool, Optional[Dict[str, Any]], Dict[str, Any]]:
    """Create or update the document so that its default version has the ``wanted`` inputs.

    Returns (changed, the document changed from, the document after). A document that someone else creates
    between the read and CreateDocument is taken over like any existing one: planned again from its content.
    """
    if current is None:
        written = create_preferences(client, name, render_content(wanted))
        if written is not None:
            return True, None, written
        current = read_document(client, name)
        if current is None:
            raise AnsibleSSMError(
                message=f"CreateDocument says {name} exists, but DescribeDocument does not find it; run the task again."
            )
        changed, wanted = plan(current, params)
        if not changed:
            return False, current, current
    content = render_content(wanted, current.get("description"))
    return True, current, update_preferences(client, name, current, content)


def result_view(name: str, document: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if document is None:
        return {}
    inputs = effective_inputs(content_inputs(document["content"]))
    return document_view(name, document["default_version"], document["latest_version"], inputs)


def run(module: AnsibleAWSModule) -> Dict[str, Any]:
    params = module.params
    name = params["name"]
    ssm = module.client("ssm")
    if params["state"] == "present" and params["kms_key_id"]:
        check_kms_key(module.client("kms"), params["kms_key_id"], module.region)
    if params["state"] == "present":
        check_destinations(module, params)

    current = read_document(ssm, name)
    changed, wanted = plan(current, params)
    before = result_view(name, current)

    keep = params["prune_versions"]
    listed: List[str] = []
    if keep is not None and current is not None:
        # Listed before anything changes, so that a refusal (permissions) fails the task with nothing done.
        listed = [v["DocumentVersion"] for v in list_document_versions(ssm, name)]

    if wanted is not None and params["state"] == "present":
        warning = run_as_warning(wanted)
        if warning:
            warn(warning)

    if changed and not module.check_mode:
        changed, current, written = write_preferences(ssm, name, params, current, wanted)
        before, after = result_view(name, current), result_view(name, written)
        if keep is not None:
            listed = [v["DocumentVersion"] for v in list_document_versions(ssm, name)]
    elif changed:
        version = next_version(current["latest_version"] if current else None)
        after = document_view(name, version, version, wanted)
        listed = listed + [version]
    else:
        after = before
    pruned = plan_prune(listed, after.get("default_version"), keep)
    if pruned and not module.check_mode:
        for version in pruned:
            delete_document_version(ssm, name, version)
        after = result_view(name, read_document(ssm, name))

    result: Dict[str, Any] = {"changed": changed or bool(pruned), "document": after}
    if params["prune_versions"] is not None:
        result["pruned_versions"] = pruned
    if module._diff:
        result["diff"] = {"before": before.get("inputs", {}), "after": after.get("inputs", {})}
    return result


def main() -> None:
    argument_spec = dict(
        name=dict(type="str", default=DEFAULT_NAME),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        s3_bucket_name=dict(type="str"),
        s3_key_prefix=dict(type="str", no_log=False),
        s3_encryption_enabled=dict(type="bool"),
        cloudwatch_log_group_name=dict(type="str"),
        cloudwatch_encryption_enabled=dict(type="bool"),
        cloudwatch_streaming_enabled=dict(type="bool"),
        kms_key_id=dict(type="str"),
        idle_session_timeout=dict(type="int"),
        max_session_duration=dict(type="int"),
        run_as_enabled=dict(type="bool"),
        run_as_default_user=dict(type="str"),
        shell_profile=dict(type="dict", options=dict(linux=dict(type="str"), windows=dict(type="str"))),
        prune_versions=dict(type="int"),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)

    errors = validate_params(module.params, module.region)
    if errors:
        module.fail_json(msg=" ".join(errors), errors=errors)
    ignored = ignored_with_absent(module.params)
    if ignored:
        warn(f"state=absent restores AWS's defaults and ignores {', '.join(ignored)}.")

    try:
        result = run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
