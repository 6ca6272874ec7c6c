"""Session Manager preferences, callers and transcripts: what the service reads from the account.

Preferences come from the Session document ``SSM-SessionManagerRunShell`` (or the one StartSession names) as
stored in moto; the caller comes from the request's access key through moto's STS and IAM; transcripts go to
the lab's own S3 and CloudWatch Logs over HTTP, as the agent uploads them.
"""

from __future__ import annotations

import json
import logging
import re
import time

import yaml
from moto.backends import get_backend

from .. import common
from . import authz
from .registry import Registry, Session

log = logging.getLogger("ssm_lab.prefs")

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
RUN_AS_TAG = "SSMSessionRunAs"
LINUX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


def _ssm(registry: Registry):
    return get_backend("ssm")[registry.account_id][registry.region]


def session_document(registry: Registry, name: str) -> dict | None:
    """The parsed default version of a Session document, or None when it does not exist."""
    try:
        documents = _ssm(registry)._get_documents(name)
    except Exception:  # noqa: BLE001 - moto raises its own InvalidDocument
        return None
    doc = documents.get_default_version()
    try:
        content = json.loads(doc.content) if doc.document_format == "JSON" else yaml.safe_load(doc.content)
    except (ValueError, yaml.YAMLError):
        return None
    if getattr(doc, "document_type", "") != "Session" or not isinstance(content, dict):
        return None
    return content


def preferences(registry: Registry) -> dict:
    content = session_document(registry, PREFERENCES_DOCUMENT) or {}
    inputs = content.get("inputs") or {}
    return inputs if isinstance(inputs, dict) else {}


def caller(registry: Registry, authorization: str) -> tuple[str, str, dict]:
    """(name for the session id, owner ARN, tags) of the caller behind an Authorization header."""
    match = re.search(r"Credential=([^/]+)/", authorization or "")
    access_key = match.group(1) if match else common.ACCESS_KEY
    sts = get_backend("sts")[registry.account_id]["global"]
    _user_id, arn, _account = sts.get_caller_identity(access_key, registry.region)
    iam = get_backend("iam")[registry.account_id]["global"]
    tags: dict = {}
    name = arn.rsplit("/", 1)[-1]
    try:
        if ":user/" in arn:
            user = iam.get_user(name)
            listed = iam.list_user_tags(user.name)  # moto 5.2: the list itself
            tags = {t["Key"]: t["Value"] for t in (listed["Tags"] if isinstance(listed, dict) else listed)}
        elif ":assumed-role/" in arn:
            role_name = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
            role = iam.get_role(role_name)
            tags = dict(role.tags) if isinstance(role.tags, dict) else {}
            if isinstance(role.tags, dict) and role.tags and isinstance(next(iter(role.tags.values())), dict):
                tags = {v["Key"]: v["Value"] for v in role.tags.values()}
            # Session tags win over role tags, as on AWS: moto does not keep them, so role tags it is.
    except Exception:  # noqa: BLE001 - an unknown user simply has no tags
        tags = {}
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", name) or "moto", arn, tags


def run_as_user(prefs: dict, tags: dict) -> tuple[str | None, str | None]:
    """(OS user, error) for a shell session under these preferences and caller tags."""
    enabled = str(prefs.get("runAsEnabled", False)).lower() == "true"
    if not enabled:
        return "ssm-user", None
    user = tags.get(RUN_AS_TAG) or prefs.get("runAsDefaultUser") or ""
    if not user:
        return None, "Run As is enabled but neither the caller's SSMSessionRunAs tag nor runAsDefaultUser names a user"
    if not LINUX_USER.match(user):
        return None, f"Invalid RunAs user name: {user}"
    return user, None


def encryption_problem(registry: Registry, prefs: dict) -> str | None:
    """The agent refuses to start a logged session whose destination is not encrypted when asked to be."""
    bucket = prefs.get("s3BucketName")
    if bucket and str(prefs.get("s3EncryptionEnabled", True)).lower() == "true":
        try:
            found = get_backend("s3")[registry.account_id]["aws"].get_bucket(bucket)
        except Exception:  # noqa: BLE001
            return f"Couldn't start the session because S3 bucket {bucket} does not exist or is not accessible."
        # Every bucket has had default encryption (SSE-S3 at least) since January 2023; moto leaves it unset.
        del found
    group = prefs.get("cloudWatchLogGroupName")
    if group and str(prefs.get("cloudWatchEncryptionEnabled", True)).lower() == "true":
        logs = get_backend("logs")[registry.account_id][registry.region]
        found = logs.groups.get(group)
        if found is None:
            return f"Couldn't start the session because CloudWatch log group {group} does not exist."
        if not getattr(found, "kms_key_id", None):
            return (
                "Couldn't start the session because we are unable to validate encryption on CloudWatch Logs log "
                f"group {group}."
            )
    return None


def output_urls(registry: Registry, session: Session) -> dict:
    prefs = session.preferences
    urls = {}
    if prefs.get("s3BucketName"):
        urls["S3OutputUrl"] = f"https://{prefs['s3BucketName']}.s3.amazonaws.com/{transcript_key(prefs, session.id)}"
    if prefs.get("cloudWatchLogGroupName"):
        urls["CloudWatchOutputUrl"] = (
            f"https://console.aws.amazon.com/cloudwatch/home?region={registry.region}#logEventViewer:"
            f"group={prefs['cloudWatchLogGroupName']};stream={session.id}"
        )
    return urls


def transcript_key(prefs: dict, session_id: str) -> str:
    prefix = str(prefs.get("s3KeyPrefix") or "").strip("/")
    return f"{prefix}/{session_id}.log" if prefix else f"{session_id}.log"


def upload_transcript(registry: Registry, endpoint: str, session: Session) -> None:
    """Write the session's output where the preferences ask, as the agent does when a session ends."""
    prefs = session.preferences
    if session.session_type != "Standard_Stream" or not session.transcript:
        return
    import boto3  # the upload goes over HTTP to the lab itself, as the agent's does to AWS

    text = bytes(session.transcript).decode("utf-8", errors="replace")
    kwargs = dict(endpoint_url=endpoint, region_name=registry.region,
                  aws_access_key_id=common.ACCESS_KEY, aws_secret_access_key=common.SECRET_KEY,
                  config=common.internal_config())
    # The agent uploads with the node's role session, through the VPC endpoint that carries it if there is one: the
    # role's policies (and the bucket's KMS key), or that endpoint's policy, may refuse the upload; the agent logs it
    # and the session still ends as it would have.
    node = registry.nodes.get(session.target)
    partition = authz.partition_of(registry.region)
    bucket = prefs.get("s3BucketName")
    if bucket:
        key = transcript_key(prefs, session.id)
        denial = registry.node_put_object_denial(node, bucket, key)
        if denial is not None:
            log.warning("transcript upload to S3 failed for %s: AccessDenied: %s", session.id,
                        denial.message(quoted=denial.action.startswith("s3:")))
            bucket = None
    if bucket:
        try:
            boto3.client("s3", **kwargs).put_object(Bucket=bucket, Key=key, Body=text.encode())
        except Exception:  # noqa: BLE001 - on AWS a failed upload does not fail the session either
            log.exception("transcript upload to S3 failed for %s", session.id)
    group = prefs.get("cloudWatchLogGroupName")
    if group:
        stream = f"arn:{partition}:logs:{registry.region}:{registry.account_id}:log-group:{group}:log-stream:{session.id}"
        denial = next(filter(None, (registry.node_write_denial(node, "logs", action, stream)
                                    for action in ("logs:CreateLogStream", "logs:PutLogEvents"))), None)
        if denial is not None:
            log.warning("transcript upload to CloudWatch Logs failed for %s: AccessDeniedException: %s", session.id,
                        denial.message())
            group = None
    if group:
        try:
            logs = boto3.client("logs", **kwargs)
            try:
                logs.create_log_stream(logGroupName=group, logStreamName=session.id)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            stamp = int(time.time() * 1000)
            chunks = [text[i:i + 200_000] for i in range(0, len(text), 200_000)] or [""]
            logs.put_log_events(
                logGroupName=group,
                logStreamName=session.id,
                logEvents=[{"timestamp": stamp, "message": chunk} for chunk in chunks],
            )
        except Exception:  # noqa: BLE001
            log.exception("transcript upload to CloudWatch Logs failed for %s", session.id)
