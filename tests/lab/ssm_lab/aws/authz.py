"""IAM on the calls the lab serves: who is calling, and whether their identity-based policies allow it.

When a request is signed with the access key of an IAM user that moto knows (``iam.create_access_key``), or with
the session credentials of a role assumed through the lab's STS (``sts.assume_role``), the lab judges that
principal's identity-based policies (inline and attached managed policies, a user's groups' policies, and the
permissions boundary) with the collection's one IAM evaluator, as ``iamsim`` does for SimulatePrincipalPolicy.
Any other key (the lab's default ``testing``, which moto answers as ``arn:aws:sts::ACCOUNT:user/moto``) acts
as the account's administrator, so that the lab's own tooling and every test that does not ask for IAM are
unchanged; telling one apart costs a string comparison, so the lab's start and its S3 traffic stay as cheap.

What is judged (resources and condition keys as Session Manager, Run Command, S3 and CloudWatch Logs name them):

* ``ssm:StartSession`` on the target (``arn:aws:ec2:REGION:ACCOUNT:instance/ID``, or
  ``arn:aws:ssm:REGION:ACCOUNT:managed-instance/mi-...``, its tags as ``ssm:resourceTag/KEY`` and
  ``aws:ResourceTag/KEY``) and on the document (``arn:aws:ssm:REGION:ACCOUNT:document/NAME``, or
  ``arn:aws:ssm:REGION::document/AWS-...`` for AWS's own): both must be allowed;
* ``ssm:ResumeSession`` and ``ssm:TerminateSession`` on ``arn:aws:ssm:REGION:ACCOUNT:session/ID``, with the tags
  Session Manager puts on every session: ``aws:ssmmessages:session-id`` (the ``aws:userid`` of the principal
  that started it) and ``aws:ssmmessages:target-id`` (its target);
* ``ssm:SendCommand`` on each target instance and on the document; ``ssm:GetCommandInvocation``,
  ``ssm:ListCommandInvocations``, ``ssm:ListCommands`` and ``ssm:CancelCommand`` on ``*`` (they name no resource
  type);
* every other SSM action the lab serves itself (``SERVED``): the list actions ``ssm:DescribeSessions``,
  ``ssm:DescribeInstanceInformation``, ``ssm:GetInventory`` and ``ssm:ListAssociations`` on ``*``;
  ``ssm:GetConnectionStatus`` and the managed-instance tag actions on the node (with its tags; adding or removing
  tags also with ``aws:RequestTag/KEY`` and ``aws:TagKeys``); ``ssm:ListDocumentVersions`` on the document; the
  service setting actions on ``arn:aws:ssm:REGION:ACCOUNT:servicesetting/ssm/...``; the association actions on
  the association (``arn:aws:ssm:REGION:ACCOUNT:association/ID``; ``ssm:CreateAssociation`` on its document and
  target instances); and ``tag:GetResources`` on ``*``;
* ``s3:GetObject`` on ``arn:aws:s3:::BUCKET/KEY`` for an object read (GET or HEAD, presigned URLs too);
* ``logs:GetLogEvents`` on ``arn:aws:logs:REGION:ACCOUNT:log-group:GROUP:log-stream:STREAM`` and
  ``logs:FilterLogEvents`` on ``arn:aws:logs:REGION:ACCOUNT:log-group:GROUP:*``;
* the nodes' own writes, with the role session their agent signs with (``role_session``): ``s3:PutObject`` of
  transcripts and Run Command output, ``kms:GenerateDataKey`` on the bucket's KMS key when its default encryption
  is SSE-KMS (``kms_denial``: the key policy, and IAM policies where the key policy lets the account's IAM decide),
  ``logs:CreateLogStream`` and ``logs:PutLogEvents`` (``logs:CreateLogGroup`` for a group Run Command creates).

The calls moto serves (EC2, IAM, STS, KMS, CloudWatch Logs but the reads above, SSM documents and parameters, and
every S3 request beside object reads) are judged by ``service_authz`` with the same functions, so that every call a
known principal signs is judged once.

The policy variables are the principal's: ``aws:username`` (IAM users only), ``aws:userid`` (a user's unique id,
``AIDA...``; a role session's ``AROA...:SESSION-NAME``), ``aws:PrincipalArn`` (the user, or the role) and
``aws:PrincipalTag/KEY`` (its tags). A
denial names the caller and the resource the way AWS does.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field

from moto.backends import get_backend

from .. import common
from . import iamsim

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
# S3 sub-resources that make a GET another action than s3:GetObject (not judged here).
_S3_SUBRESOURCES = frozenset({"acl", "tagging", "attributes", "legal-hold", "retention", "torrent", "uploadId"})
# Run Command actions that name no resource type: judged on "*".
COMMAND_READS = ("GetCommandInvocation", "ListCommandInvocations", "ListCommands", "CancelCommand")
# SSM list actions that name no resource type (AWS's service authorization reference): judged on "*".
LIST_ACTIONS = ("DescribeSessions", "DescribeInstanceInformation", "GetInventory", "ListAssociations") + COMMAND_READS
# Judged on the service setting's ARN, on the association's ARN, and on the managed instance (hybrid nodes).
SERVICE_SETTING_ACTIONS = ("GetServiceSetting", "UpdateServiceSetting", "ResetServiceSetting")
ASSOCIATION_ACTIONS = ("DescribeAssociation", "UpdateAssociation", "DeleteAssociation", "ListAssociationVersions",
                       "DescribeAssociationExecutions", "DescribeAssociationExecutionTargets", "StartAssociationsOnce")
TAG_ACTIONS = ("AddTagsToResource", "RemoveTagsFromResource", "ListTagsForResource")
# Every SSM action the lab serves itself (ssmapi, associations): each is judged (tests/lab/tests list them all).
SERVED = (("StartSession", "ResumeSession", "TerminateSession", "SendCommand", "GetConnectionStatus",
           "ListDocumentVersions", "CreateAssociation") + LIST_ACTIONS + SERVICE_SETTING_ACTIONS + ASSOCIATION_ACTIONS
          + TAG_ACTIONS)


@dataclass
class Caller:
    """An IAM principal behind a request: ``arn`` as AWS names it in a denial, ``principal`` the IAM user or role
    whose policies apply, ``user_id`` its ``aws:userid``."""

    arn: str
    principal: str
    user_id: str
    policies: list = field(default_factory=list)
    boundary: object = None
    facts: dict = field(default_factory=dict)


class Denied(Exception):
    """The caller may not ``action`` on ``resource``."""

    def __init__(self, caller: Caller, action: str, resource: str, decision: str, boundary: bool = False,
                 policy: str = "identity-based") -> None:
        self.caller, self.action, self.resource, self.decision = caller, action, resource, decision
        if decision == iamsim.EXPLICIT_DENY:
            why = f"with an explicit deny in {'an' if policy[0] in 'aeiou' else 'a'} {policy} policy"
        elif boundary:
            why = f"because no permissions boundary allows the {action} action"
        else:
            why = f"because no {policy} policy allows the {action} action"
        self.reason = why
        super().__init__(self.message())

    def message(self, quoted: bool = False) -> str:
        resource = f'"{self.resource}"' if quoted else self.resource
        return f"User: {self.caller.arn} is not authorized to perform: {self.action} on resource: {resource} {self.reason}"


def access_key(authorization: str, query_string: str = "") -> str:
    """The access key a request is signed with: its Authorization header (SigV4, or S3's older ``AWS KEY:SIG``),
    or a presigned URL's query (``X-Amz-Credential``, or ``AWSAccessKeyId``)."""
    match = _CREDENTIAL.search(authorization or "")
    if match:
        return match.group(1)
    if authorization and authorization.startswith("AWS "):
        return authorization[4:].split(":", 1)[0]
    if query_string and ("X-Amz-Credential" in query_string or "AWSAccessKeyId" in query_string):
        query = urllib.parse.parse_qs(query_string)
        credential = (query.get("X-Amz-Credential") or query.get("AWSAccessKeyId") or [""])[0]
        return credential.split("/", 1)[0]
    return ""


def identity(account_id: str, region: str, key: str) -> tuple[str, str]:
    """(aws:userid, ARN) of an access key as moto's STS knows it (the default identity for an unknown key)."""
    sts = get_backend("sts")[account_id]["global"]
    user_id, arn, _account = sts.get_caller_identity(key or common.ACCESS_KEY, region)
    return user_id, arn


def caller(account_id: str, region: str, key: str) -> Caller | None:
    """The IAM principal behind ``key``, or None for a key IAM does not know (the lab's all-powerful default)."""
    if not key or key == common.ACCESS_KEY:
        return None
    user_id, arn = identity(account_id, region, key)
    resource = arn.split(":", 5)[-1]
    if ":sts::" in arn and resource.startswith("user/"):
        return None  # moto's answer for a key it does not know
    if resource.startswith("assumed-role/"):
        role = resource.split("/")[1]
        principal = f"{arn.split(':sts::', 1)[0]}:iam::{arn.split(':')[4]}:role/{role}"
    else:
        principal = arn
    try:
        policies, boundary, facts = iamsim.principal_policies(account_id, principal)
    except iamsim.SimulationError:
        return None
    facts = {**facts, "aws:userid": [user_id], "aws:principalarn": [principal]}
    return Caller(arn=arn, principal=principal, user_id=user_id, policies=policies, boundary=boundary, facts=facts)


def role_session(account_id: str, role_arn: str, session_name: str) -> Caller | None:
    """The session of an IAM role named ``session_name`` (a node's: its agent's credentials are a session of its
    instance profile's role, or of its hybrid activation's role, named after the node), or None when IAM does not
    know the role."""
    try:
        policies, boundary, facts = iamsim.principal_policies(account_id, role_arn)
    except iamsim.SimulationError:
        return None
    partition, name = role_arn.split(":")[1], role_arn.rsplit("/", 1)[-1]
    user_id = f"{facts['aws:userid'][0]}:{session_name}"
    facts = {**facts, "aws:userid": [user_id], "aws:principalarn": [role_arn]}
    return Caller(arn=f"arn:{partition}:sts::{account_id}:assumed-role/{name}/{session_name}", principal=role_arn,
                  user_id=user_id, policies=policies, boundary=boundary, facts=facts)


def _full_context(who: Caller, context: dict) -> dict:
    return {**{k.lower(): v if isinstance(v, list) else [v] for k, v in context.items()}, **who.facts}


def identity_decision(who: Caller, action: str, resource: str, context: dict) -> tuple[str, bool]:
    """(decision, whether the permissions boundary decided it) of ``who``'s identity-based policies."""
    full = _full_context(who, context)
    decision, _matched = iamsim.engine.evaluate(who.policies, action, resource, full, set())
    if decision != iamsim.ALLOWED:
        return decision, False
    if who.boundary is not None:
        bounded, _ = iamsim.engine.evaluate([("PermissionsBoundary", "permissions-boundary", who.boundary)],
                                            action, resource, full, set())
        if bounded != iamsim.ALLOWED:
            return bounded, True
    return decision, False


def require(who: Caller | None, action: str, resources: list[tuple[str, dict]]) -> None:
    """Raise Denied unless ``who`` may ``action`` on every (resource ARN, condition context) given."""
    if who is None:
        return
    for resource, context in resources:
        decision, boundary = identity_decision(who, action, resource, context)
        if decision != iamsim.ALLOWED:
            raise Denied(who, action, resource, decision, boundary=boundary)


# --- KMS: the key policy, and IAM where the key policy lets it decide -----------------------------------------


def _key_statements(who: Caller, document, account_id: str) -> tuple[list, list]:
    """The key policy's statements that name ``who`` (the role, or its session) and those that name the account
    (its root or its id: the key policy lets the account's IAM policies decide)."""
    partition = who.principal.split(":")[1]
    root = {account_id, f"arn:{partition}:iam::{account_id}:root"}
    direct, account = [], []
    for statement in iamsim.statements(document):
        if iamsim.engine.principal_covers(statement, (), lambda value: value in (who.arn, who.principal)):
            direct.append(statement)
        elif iamsim.engine.principal_covers(statement, (), lambda value: value in root):
            account.append(statement)
    return direct, account


def kms_denial(who: Caller | None, key, action: str, context: dict) -> Denied | None:
    """KMS's refusal of ``action`` on ``key`` (moto's key) to ``who``, or None: an explicit Deny in the key policy
    or the caller's policies refuses; else the key policy must allow the caller itself, or allow the account and the
    caller's IAM policies allow (AWS's KMS authorization). The condition context: kms:ViaService, the encryption
    context (kms:EncryptionContext:KEY), kms:CallerAccount."""
    if who is None:
        return None
    account_id = key.arn.split(":")[4]
    direct, account = _key_statements(who, key.policy, account_id)
    full = _full_context(who, {"kms:CallerAccount": account_id, **context})

    def judged(statements: list) -> str:
        return iamsim.engine.evaluate([("KeyPolicy", "resource", {"Statement": statements})], action, key.arn, full,
                                      set())[0]

    by_key, by_account = judged(direct), judged(account)
    identity, boundary = identity_decision(who, action, key.arn, context)
    if iamsim.EXPLICIT_DENY in (by_key, by_account):
        return Denied(who, action, key.arn, iamsim.EXPLICIT_DENY, policy="resource-based")
    if identity == iamsim.EXPLICIT_DENY:
        return Denied(who, action, key.arn, identity, boundary=boundary)
    if by_key == iamsim.ALLOWED:
        return None
    if by_account != iamsim.ALLOWED:
        return Denied(who, action, key.arn, iamsim.IMPLICIT_DENY, policy="resource-based")
    return None if identity == iamsim.ALLOWED else Denied(who, action, key.arn, identity, boundary=boundary)


def bucket_kms_key(account_id: str, region: str, bucket: str):
    """(moto's KMS key, whether the bucket uses an S3 Bucket Key) of a bucket whose default encryption is SSE-KMS
    with a key of the account, else (None, False)."""
    try:
        rules = get_backend("s3")[account_id]["aws"].get_bucket(bucket).encryption or {}
    except Exception:  # noqa: BLE001 - no such bucket: the write itself fails
        return None, False
    rules = rules.get("Rule") if isinstance(rules, dict) else None
    for rule in rules if isinstance(rules, list) else [rules] if rules else []:
        default = rule.get("ApplyServerSideEncryptionByDefault") or {}
        if default.get("SSEAlgorithm") not in ("aws:kms", "aws:kms:dsse") or not default.get("KMSMasterKeyID"):
            continue
        key_id = default["KMSMasterKeyID"]
        key_region = key_id.split(":")[3] if key_id.startswith("arn:") else region
        try:
            kms = get_backend("kms")[account_id][key_region]
            key = kms.describe_key(key_id)
        except Exception:  # noqa: BLE001 - a key the lab does not have: nothing to judge
            return None, False
        return key, str(rule.get("BucketKeyEnabled", "false")).lower() == "true"
    return None, False


# --- resources ---------------------------------------------------------------------------------------------


def tag_context(tags: dict) -> dict:
    """A resource's tags as the condition keys ssm:resourceTag/KEY and aws:ResourceTag/KEY."""
    context = {}
    for key, value in tags.items():
        context[f"ssm:resourceTag/{key}"] = [value]
        context[f"aws:ResourceTag/{key}"] = [value]
    return context


def node_arn(partition: str, region: str, account_id: str, node_id: str) -> str:
    if node_id.startswith("mi-"):
        return f"arn:{partition}:ssm:{region}:{account_id}:managed-instance/{node_id}"
    return f"arn:{partition}:ec2:{region}:{account_id}:instance/{node_id}"


def document_arn(partition: str, region: str, account_id: str, name: str) -> str:
    """AWS's own documents (AWS-*) have no account in their ARN."""
    owner = "" if name.startswith("AWS-") else account_id
    return f"arn:{partition}:ssm:{region}:{owner}:document/{name}"


def session_arn(partition: str, region: str, account_id: str, session_id: str) -> str:
    return f"arn:{partition}:ssm:{region}:{account_id}:session/{session_id}"


def session_context(owner_id: str, target: str) -> dict:
    """The tags Session Manager puts on every session it starts."""
    return {"ssm:resourceTag/aws:ssmmessages:session-id": [owner_id],
            "aws:ResourceTag/aws:ssmmessages:session-id": [owner_id],
            "ssm:resourceTag/aws:ssmmessages:target-id": [target],
            "aws:ResourceTag/aws:ssmmessages:target-id": [target]}


def s3_object_read(environ) -> tuple[str, str] | None:
    """(bucket, key) when a request reads an object (GET or HEAD of a key, path-style), else None."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return None
    bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    if not bucket or not key:
        return None
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if _S3_SUBRESOURCES & set(query):
        return None
    return bucket, urllib.parse.unquote(key)


def logs_read(target: str, body: bytes, partition: str, region: str, account_id: str) -> tuple[str, str] | None:
    """(action, resource ARN) of a CloudWatch Logs read of events, else None."""
    operation = target.split(".", 1)[1] if "." in target else ""
    if operation not in ("GetLogEvents", "FilterLogEvents"):
        return None
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    group = request.get("logGroupName") or str(request.get("logGroupIdentifier") or "").rsplit(":log-group:", 1)[-1]
    group_arn = f"arn:{partition}:logs:{region}:{account_id}:log-group:{group}"
    if operation == "GetLogEvents":
        return f"logs:{operation}", f"{group_arn}:log-stream:{request.get('logStreamName', '')}"
    return f"logs:{operation}", f"{group_arn}:*"


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"

