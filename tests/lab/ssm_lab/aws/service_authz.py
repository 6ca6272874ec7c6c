"""IAM on the calls moto serves: EC2, IAM, STS, KMS, CloudWatch Logs, the SSM actions the lab leaves to moto
(documents, parameters, activations...), and S3.

moto has a hook of its own, ``ActionAuthenticatorMixin._authenticate_and_authorize_action``, that every request
of every moto service passes through; it enforces IAM only after ``INITIAL_NO_AUTH_ACTION_COUNT`` requests, for
every caller alike (it would refuse the lab's default credentials, which IAM does not know), and its evaluator
ignores Conditions and permissions boundaries. ``install`` replaces it in the lab's server process with ``judge``:
a request signed with the lab's default key (or none) returns at once, at the cost of a string comparison; for a
known principal (``authz.caller``: an IAM user's access key, a lab-STS role session) moto's action name
(``service:Action``) is judged with the lab's evaluator (``authz.identity_decision``: conditions, policy
variables, groups, boundaries), on the resource AWS's service authorization reference names where one can be
named from the request:

* EC2: the instances of the actions on instances (their tags as ``aws:ResourceTag/KEY`` and
  ``ec2:ResourceTag/KEY``); ``arn:...:instance/*`` for RunInstances; the tagged resources of CreateTags and
  DeleteTags (with ``aws:RequestTag/KEY`` and ``aws:TagKeys``); ``*`` for Describe* and the rest;
* IAM: the instance profile, group, role, user or policy the parameters name (in that order: the resource of
  AddUserToGroup is the group, of AttachRolePolicy the role); the caller itself for a user action without
  UserName; ``*`` for the list actions;
* STS: the role of AssumeRole; GetCallerIdentity is never refused, as on AWS;
* KMS: the key (KeyId, TargetKeyId, DestinationKeyId, or the key a ciphertext names), judged with the key policy
  as KMS does (``authz.kms_denial``: the encryption context as ``kms:EncryptionContext:KEY``); ``*`` for the
  actions on no key (CreateKey, ListKeys, ListAliases, GenerateRandom);
* CloudWatch Logs: the log stream (``...:log-group:GROUP:log-stream:STREAM``) or the group
  (``...:log-group:GROUP:*``); DescribeLogGroups on ``...:log-group:*``;
* SSM: the document (``authz.document_arn``) or the parameters (``...:parameter/NAME``); ``*`` for the rest;
* any other service: ``*``.

S3 is judged in the lab's front instead (``s3_request``): moto's own S3 action names are wrong for several
sub-resources (PutBucketEncryption reaches its hook as CreateBucket) and its S3 errors go through its serializer.
The front also judges the reads of CloudWatch Logs events (``authz.logs_read``) and marks each request it judged
(``JUDGED`` in the WSGI environ), which ``judge`` leaves alone: nothing is judged twice.

A denial carries each service's own error: EC2 ``UnauthorizedOperation`` (403, with an encoded authorization
failure message but on Describe*), IAM and STS ``AccessDenied`` (403), KMS, CloudWatch Logs, SSM and every other
JSON service ``AccessDeniedException`` (400), S3 ``AccessDenied`` (403).

Not judged: resource-based policies but KMS key policies (bucket policies, role trust policies for AssumeRole);
the other resources an action needs beside the one named (RunInstances' image, subnet and security groups;
iam:PassRole of RunInstances and AssociateIamInstanceProfile); SSE-KMS keys of S3 object reads and writes by
users.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from xml.sax.saxutils import escape

from moto.backends import get_backend
from werkzeug.exceptions import HTTPException

from .. import common
from . import authz, iamsim

# The WSGI environ key the lab's front sets on a request it has judged itself.
JUDGED = "ssm_lab.authz.judged"
# Signing names whose IAM prefix differs.
_PREFIX = {"monitoring": "cloudwatch", "tagging": "tag", "email": "ses"}
_IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
_STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"

# EC2 actions on instances (the InstanceId parameter, or InstanceId.N).
EC2_INSTANCE_ACTIONS = frozenset({
    "StartInstances", "StopInstances", "RebootInstances", "TerminateInstances", "ModifyInstanceAttribute",
    "ModifyInstanceMetadataOptions", "AssociateIamInstanceProfile", "GetConsoleOutput", "GetPasswordData",
    "MonitorInstances", "UnmonitorInstances", "ResetInstanceAttribute"})
# EC2 id prefixes and their resource types, for CreateTags and DeleteTags (images have no account in their ARN).
_EC2_TYPES = {"i": "instance", "vpc": "vpc", "subnet": "subnet", "sg": "security-group", "vpce": "vpc-endpoint",
              "igw": "internet-gateway", "rtb": "route-table", "eni": "network-interface", "vol": "volume",
              "ami": "image", "snap": "snapshot", "key": "key-pair", "acl": "network-acl", "eipalloc": "elastic-ip",
              "nat": "natgateway", "dopt": "dhcp-options", "lt": "launch-template"}
# KMS actions that name no key.
KMS_KEYLESS = frozenset({"CreateKey", "ListKeys", "ListAliases", "GenerateRandom", "ListRetirableGrants",
                         "CreateCustomKeyStore", "DescribeCustomKeyStores", "ConnectCustomKeyStore"})
# SSM actions on a document (Name), moto-served.
SSM_DOCUMENT_ACTIONS = frozenset({
    "CreateDocument", "GetDocument", "DescribeDocument", "UpdateDocument", "DeleteDocument",
    "UpdateDocumentDefaultVersion", "DescribeDocumentPermission", "ModifyDocumentPermission",
    "UpdateDocumentMetadata"})
SSM_PARAMETER_ACTIONS = frozenset({
    "GetParameter", "GetParameters", "PutParameter", "DeleteParameter", "DeleteParameters", "GetParameterHistory",
    "LabelParameterVersion", "UnlabelParameterVersion", "GetParametersByPath"})


class LabDenied(HTTPException):
    """A service's refusal as moto's call_action renders an HTTPException: ``description`` is the body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(description=body)
        self.code = status


# --- the hook -------------------------------------------------------------------------------------------


def install() -> None:
    """Replace moto's authorization hook with ``judge`` (in the lab's server process)."""
    from moto.core.authorization import ActionAuthenticatorMixin  # pylint: disable=import-outside-toplevel

    ActionAuthenticatorMixin._authenticate_and_authorize_action = judge


def judge(response, iam_request_cls, resource: str = "*") -> None:  # pylint: disable=unused-argument
    """moto's hook: nothing for the lab's default credentials, S3 (the front's) and what the front has judged;
    for a known principal, raise its service's denial unless its policies allow the call."""
    headers = response.headers
    authorization = headers.get("Authorization", "") or ""
    query = "" if "Credential=" in authorization else urllib.parse.urlsplit(response.uri or "").query
    key = authz.access_key(authorization, query)
    if not key or key == common.ACCESS_KEY or iam_request_cls.__name__ == "S3IAMRequest":
        return
    environ = getattr(getattr(response, "normalized_request", None), "environ", None) or {}
    if environ.get(JUDGED):
        return
    service, region = _scope(authorization, query)
    if not service or service == "s3":
        return
    account = response.current_account
    who = authz.caller(account, region or common.REGION, key)
    if who is None:
        return
    target = headers.get("X-Amz-Target", "") or ""
    operation = target.split(".", 1)[1] if "." in target else _param(response.querystring, "Action") \
        or response._get_action()  # pylint: disable=protected-access
    denial = decide(who, service, operation, _params(response, target), account, region or common.REGION)
    if denial is None:
        return
    status, body, code = render(service, operation, denial, json_protocol=bool(target))
    response.response_headers["x-amzn-ErrorType"] = code
    response.response_headers["Content-Type"] = "application/x-amz-json-1.1" if target else "text/xml"
    raise LabDenied(status, body)


def _scope(authorization: str, query: str) -> tuple[str, str]:
    """(signing service, region) of a SigV4 request (its Authorization header, or a presigned query)."""
    scope = authorization.partition("Credential=")[2].split(",", 1)[0]
    if not scope and query:
        scope = (urllib.parse.parse_qs(query).get("X-Amz-Credential") or [""])[0]
    parts = scope.split("/")
    return (parts[3], parts[2]) if len(parts) > 3 else ("", "")


def _param(querystring, name: str) -> str:
    value = (querystring or {}).get(name)
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value) if value is not None else ""


def _params(response, target: str) -> dict:
    """The request's parameters: its JSON body (JSON protocols), else its form (query protocol), first values."""
    if target:
        body = response.body
        try:
            found = json.loads(body.decode() if isinstance(body, bytes) else body or "{}")
        except (ValueError, UnicodeDecodeError):
            found = {}
        return found if isinstance(found, dict) else {}
    return {name: values[0] if isinstance(values, list) and values else values
            for name, values in (response.querystring or {}).items()}


# --- deciding -------------------------------------------------------------------------------------------


def decide(who: authz.Caller, service: str, operation: str, params: dict, account: str,
           region: str) -> authz.Denied | None:
    """The denial of ``service:operation`` to ``who``, or None when its policies allow it."""
    prefix = _PREFIX.get(service, service)
    action = f"{prefix}:{operation}"
    if action == "sts:GetCallerIdentity":
        return None  # AWS never refuses it, an explicit Deny included
    partition = authz.partition_of(region)
    if prefix == "kms" and operation not in KMS_KEYLESS:
        key = _kms_key(account, region, params)
        if key is not None:
            return authz.kms_denial(who, key, action, _encryption_context(params))
    for resource, context in resources(who, prefix, operation, params, account, region, partition):
        decision, boundary = authz.identity_decision(who, action, resource, context)
        if decision != iamsim.ALLOWED:
            return authz.Denied(who, action, resource, decision, boundary=boundary)
    return None


def resources(who: authz.Caller, prefix: str, operation: str, params: dict, account: str, region: str,
              partition: str) -> list[tuple[str, dict]]:
    """The (resource ARN, condition context) pairs ``prefix:operation`` is judged on."""
    if prefix == "ec2":
        return _ec2_resources(operation, params, account, region, partition)
    if prefix == "iam":
        return [(_iam_resource(who, operation, params, account, partition), {})]
    if prefix == "sts" and operation == "AssumeRole" and params.get("RoleArn"):
        return [(str(params["RoleArn"]), {})]
    if prefix == "logs":
        return [(_logs_resource(operation, params, account, region, partition), {})]
    if prefix == "ssm":
        return _ssm_resources(operation, params, account, region, partition)
    return [("*", {})]


def _numbered(params: dict, name: str) -> list[str]:
    """The values of a query-protocol list (NAME.1, NAME.2, ...) or of NAME alone."""
    found = [str(params[key]) for key in sorted((k for k in params if k.startswith(name + ".")
                                                 and k[len(name) + 1:].isdigit()), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if not found and params.get(name):
        found = [str(params[name])]
    return found


def _ec2_tags(account: str, region: str, resource_id: str) -> dict:
    try:
        return dict(get_backend("ec2")[account][region].tags.get(resource_id, {}))
    except KeyError:
        return {}


def _ec2_context(tags: dict) -> dict:
    context = {}
    for key, value in tags.items():
        context[f"aws:ResourceTag/{key}"] = context[f"ec2:ResourceTag/{key}"] = [value]
    return context


def _ec2_arn(partition: str, region: str, account: str, resource_id: str) -> str:
    kind = _EC2_TYPES.get(resource_id.split("-", 1)[0], "")
    if not kind:
        return "*"
    return f"arn:{partition}:ec2:{region}:{'' if kind == 'image' else account}:{kind}/{resource_id}"


def _ec2_resources(operation: str, params: dict, account: str, region: str, partition: str) -> list[tuple[str, dict]]:
    if operation in EC2_INSTANCE_ACTIONS:
        ids = _numbered(params, "InstanceId")
        return [(authz.node_arn(partition, region, account, i), _ec2_context(_ec2_tags(account, region, i)))
                for i in ids] or [("*", {})]
    if operation == "RunInstances":
        return [(f"arn:{partition}:ec2:{region}:{account}:instance/*", {})]
    if operation in ("CreateTags", "DeleteTags"):
        requested, index = {}, 1
        while f"Tag.{index}.Key" in params:
            requested[str(params[f"Tag.{index}.Key"])] = str(params.get(f"Tag.{index}.Value", ""))
            index += 1
        request = {f"aws:RequestTag/{key}": [value] for key, value in requested.items()}
        if requested:
            request["aws:TagKeys"] = list(requested)
        return [(_ec2_arn(partition, region, account, i), {**_ec2_context(_ec2_tags(account, region, i)), **request})
                for i in _numbered(params, "ResourceId")] or [("*", request)]
    return [("*", {})]


def _iam_lookup(getter, name: str, built: str) -> str:
    try:
        return getter(name).arn
    except Exception:  # noqa: BLE001 - an entity IAM does not have (yet): the ARN it would have
        return built


def _iam_resource(who: authz.Caller, operation: str, params: dict, account: str, partition: str) -> str:
    iam = get_backend("iam")[account]["global"]
    path = str(params.get("Path") or "/")
    base = f"arn:{partition}:iam::{account}:"
    if params.get("InstanceProfileName"):
        name = str(params["InstanceProfileName"])
        return _iam_lookup(iam.get_instance_profile, name, f"{base}instance-profile{path}{name}")
    if params.get("GroupName"):
        name = str(params["GroupName"])
        return _iam_lookup(iam.get_group, name, f"{base}group{path}{name}")
    if params.get("RoleName"):
        name = str(params["RoleName"])
        return _iam_lookup(iam.get_role, name, f"{base}role{path}{name}")
    if params.get("UserName"):
        name = str(params["UserName"])
        return _iam_lookup(iam.get_user, name, f"{base}user{path}{name}")
    if params.get("PolicyArn"):
        return str(params["PolicyArn"])
    if operation == "CreatePolicy" and params.get("PolicyName"):
        return f"{base}policy{path}{params['PolicyName']}"
    if operation.startswith("List"):
        return "*"
    if ":user/" in who.principal and operation in ("GetUser", "CreateAccessKey", "ListAccessKeys", "DeleteAccessKey",
                                                   "UpdateAccessKey", "ChangePassword", "GetAccessKeyLastUsed"):
        return who.principal  # a user action without UserName acts on the caller
    return "*"


def _logs_resource(operation: str, params: dict, account: str, region: str, partition: str) -> str:
    group = str(params.get("logGroupName") or str(params.get("logGroupIdentifier") or "").rsplit(":log-group:", 1)[-1])
    base = f"arn:{partition}:logs:{region}:{account}:log-group:"
    if operation == "DescribeLogGroups":
        return f"{base}*"
    if not group:
        return "*"
    if params.get("logStreamName") and operation in ("CreateLogStream", "PutLogEvents", "DeleteLogStream",
                                                     "GetLogEvents"):
        return f"{base}{group}:log-stream:{params['logStreamName']}"
    return f"{base}{group}:*"


def _ssm_resources(operation: str, params: dict, account: str, region: str,
                   partition: str) -> list[tuple[str, dict]]:
    if operation in SSM_DOCUMENT_ACTIONS and params.get("Name"):
        return [(authz.document_arn(partition, region, account, str(params["Name"])), {})]
    if operation in SSM_PARAMETER_ACTIONS:
        names = params.get("Names") if isinstance(params.get("Names"), list) else [params.get("Name") or
                                                                                    params.get("Path") or ""]
        base = f"arn:{partition}:ssm:{region}:{account}:parameter"
        return [(f"{base}{name}" if str(name).startswith("/") else f"{base}/{name}", {}) for name in names if name] \
            or [("*", {})]
    return [("*", {})]


def _kms_key(account: str, region: str, params: dict):
    """moto's KMS key the request names (KeyId, TargetKeyId, DestinationKeyId, or the key of a ciphertext), or
    None (moto then answers NotFoundException, or the action names no key)."""
    key_id = str(params.get("KeyId") or params.get("TargetKeyId") or params.get("DestinationKeyId") or "")
    if not key_id and params.get("CiphertextBlob"):
        try:
            key_id = base64.b64decode(str(params["CiphertextBlob"]))[:36].decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    if not key_id:
        return None
    if key_id.startswith("arn:"):
        region = key_id.split(":")[3] or region
    try:
        return get_backend("kms")[account][region].describe_key(key_id)
    except Exception:  # noqa: BLE001 - no such key: moto says so
        return None


def _encryption_context(params: dict) -> dict:
    context = params.get("EncryptionContext")
    if not isinstance(context, dict) or not context:
        return {}
    found = {f"kms:EncryptionContext:{key}": [str(value)] for key, value in context.items()}
    found["kms:EncryptionContextKeys"] = list(context)
    return found


# --- S3, in the front -----------------------------------------------------------------------------------

# Bucket sub-resources (query keys) and their IAM actions, by method; the default (no sub-resource) under "".
_S3_BUCKET = {
    "GET": {"location": "GetBucketLocation", "policy": "GetBucketPolicy", "policyStatus": "GetBucketPolicyStatus",
            "acl": "GetBucketAcl", "tagging": "GetBucketTagging", "encryption": "GetEncryptionConfiguration",
            "versioning": "GetBucketVersioning", "publicAccessBlock": "GetBucketPublicAccessBlock",
            "ownershipControls": "GetBucketOwnershipControls", "lifecycle": "GetLifecycleConfiguration",
            "logging": "GetBucketLogging", "cors": "GetBucketCORS", "notification": "GetBucketNotification",
            "website": "GetBucketWebsite", "replication": "GetReplicationConfiguration",
            "object-lock": "GetBucketObjectLockConfiguration", "versions": "ListBucketVersions",
            "uploads": "ListBucketMultipartUploads", "accelerate": "GetAccelerateConfiguration",
            "requestPayment": "GetBucketRequestPayment", "": "ListBucket"},
    "HEAD": {"": "ListBucket"},
    "PUT": {"policy": "PutBucketPolicy", "acl": "PutBucketAcl", "tagging": "PutBucketTagging",
            "encryption": "PutEncryptionConfiguration", "versioning": "PutBucketVersioning",
            "publicAccessBlock": "PutBucketPublicAccessBlock", "ownershipControls": "PutBucketOwnershipControls",
            "lifecycle": "PutLifecycleConfiguration", "logging": "PutBucketLogging", "cors": "PutBucketCORS",
            "notification": "PutBucketNotification", "website": "PutBucketWebsite",
            "replication": "PutReplicationConfiguration", "object-lock": "PutBucketObjectLockConfiguration",
            "accelerate": "PutAccelerateConfiguration", "requestPayment": "PutBucketRequestPayment",
            "": "CreateBucket"},
    "DELETE": {"policy": "DeleteBucketPolicy", "encryption": "PutEncryptionConfiguration",
               "tagging": "PutBucketTagging", "publicAccessBlock": "PutBucketPublicAccessBlock",
               "ownershipControls": "PutBucketOwnershipControls", "lifecycle": "PutLifecycleConfiguration",
               "cors": "PutBucketCORS", "website": "DeleteBucketWebsite", "replication": "PutReplicationConfiguration",
               "": "DeleteBucket"},
}
_S3_OBJECT = {
    "GET": {"acl": "GetObjectAcl", "tagging": "GetObjectTagging", "attributes": "GetObjectAttributes",
            "legal-hold": "GetObjectLegalHold", "retention": "GetObjectRetention", "torrent": "GetObjectTorrent",
            "uploadId": "ListMultipartUploadParts", "": "GetObject"},
    "HEAD": {"": "GetObject"},
    "PUT": {"acl": "PutObjectAcl", "tagging": "PutObjectTagging", "legal-hold": "PutObjectLegalHold",
            "retention": "PutObjectRetention", "": "PutObject"},
    "DELETE": {"tagging": "DeleteObjectTagging", "uploadId": "AbortMultipartUpload", "": "DeleteObject"},
    "POST": {"uploads": "PutObject", "uploadId": "PutObject", "restore": "RestoreObject", "select": "GetObject",
             "": "PutObject"},
}


def s3_request(environ, body: bytes, partition: str) -> tuple[str, list[tuple[str, dict]]] | None:
    """(IAM action, [(resource ARN, context)]) of a path-style S3 request, or None when it is none the lab knows.
    ListBuckets is s3:ListAllMyBuckets on ``*``; a bucket's sub-resources have their own actions (encryption:
    s3:PutEncryptionConfiguration); DeleteObjects is s3:DeleteObject on each key; a copy is s3:PutObject on the
    copy and s3:GetObject on its source."""
    method = environ.get("REQUEST_METHOD", "")
    bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if not bucket:
        return ("s3:ListAllMyBuckets", [("*", {})]) if method == "GET" else None
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    if not key:
        if method == "POST" and "delete" in query:
            keys = _deleted_keys(body)
            return "s3:DeleteObject", [(f"{bucket_arn}/{k}", {}) for k in keys] or [(f"{bucket_arn}/*", {})]
        table = _S3_BUCKET.get(method)
        if table is None:
            return None
        name = next((table[sub] for sub in table if sub and sub in query), table.get(""))
        return (f"s3:{name}", [(bucket_arn, {})]) if name else None
    key = urllib.parse.unquote(key)
    table = _S3_OBJECT.get(method)
    if table is None:
        return None
    name = next((table[sub] for sub in table if sub and sub in query), table.get(""))
    if "versionId" in query and name in ("GetObject", "DeleteObject"):
        name += "Version"
    found = [(f"{bucket_arn}/{key}", {})]
    source = environ.get("HTTP_X_AMZ_COPY_SOURCE", "")
    if method == "PUT" and name == "PutObject" and source:
        copied = urllib.parse.unquote(source.split("?", 1)[0]).lstrip("/")
        return "s3:PutObject", found + [(f"arn:{partition}:s3:::{copied}", {"_action": "s3:GetObject"})]
    return f"s3:{name}", found


def _deleted_keys(body: bytes) -> list[str]:
    from xml.etree import ElementTree  # pylint: disable=import-outside-toplevel

    try:
        root = ElementTree.fromstring(body or b"")
    except ElementTree.ParseError:
        return []
    return [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Key"]


def s3_denial(who: authz.Caller, action: str, found: list[tuple[str, dict]]) -> authz.Denied | None:
    """The first (resource, context) of ``found`` ``who`` may not act on (a copy's source: s3:GetObject)."""
    for resource, context in found:
        wanted = context.get("_action", action)
        context = {k: v for k, v in context.items() if k != "_action"}
        decision, boundary = authz.identity_decision(who, wanted, resource, context)
        if decision != iamsim.ALLOWED:
            return authz.Denied(who, wanted, resource, decision, boundary=boundary)
    return None


# --- errors ---------------------------------------------------------------------------------------------


def encoded_failure(denial: authz.Denied) -> str:
    """An opaque token standing for AWS's encoded authorization failure message (the lab's: base64url of the
    decision, which sts:DecodeAuthorizationMessage does not serve here)."""
    detail = {"allowed": False, "explicitDeny": denial.decision == iamsim.EXPLICIT_DENY,
              "context": {"principal": {"arn": denial.caller.arn}, "action": denial.action,
                          "resource": denial.resource}}
    return base64.urlsafe_b64encode(json.dumps(detail, sort_keys=True).encode()).decode().rstrip("=")


def render(service: str, operation: str, denial: authz.Denied, json_protocol: bool) -> tuple[int, str, str]:
    """(HTTP status, body, error code) of ``denial`` as the service says it."""
    prefix = _PREFIX.get(service, service)
    if prefix == "ec2":
        if operation.startswith("Describe"):
            said = denial.message().replace(f" on resource: {denial.resource}", "", 1)
            message = f"You are not authorized to perform this operation. {said}"
        else:
            message = (f"You are not authorized to perform this operation. {denial.message()}. "
                       f"Encoded authorization failure message: {encoded_failure(denial)}")
        body = (f"<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>{escape(message)}</Message>"
                f"</Error></Errors><RequestID>{common.random_hex(16)}</RequestID></Response>")
        return 403, body, "UnauthorizedOperation"
    if json_protocol:
        return 400, json.dumps({"__type": "AccessDeniedException", "message": denial.message()}), \
            "AccessDeniedException"
    namespace = _STS_NS if prefix == "sts" else _IAM_NS
    body = (f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>AccessDenied</Code>'
            f"<Message>{escape(denial.message())}</Message></Error><RequestId>{common.random_hex(16)}</RequestId>"
            "</ErrorResponse>")
    return 403, body, "AccessDenied"
