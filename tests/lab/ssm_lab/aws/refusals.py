"""What AWS refuses and moto accepts (or answers with an HTTP 500 page that botocore reads as "invalid XML"): the
lab refuses it too, with AWS's error code, so that a mistake the collection or a user makes shows in the lab as it
would on AWS.

- a request signed for a region that does not exist (``us-esat-1``): AWS's endpoints refuse the credential scope;
- a filter name a Describe* call of EC2 does not know (``tag-ky``): ``InvalidParameterValue``;
- ``CreateVpcEndpoint`` for a service name that does not exist (``com.amazonaws.REGION.ssm-messages``):
  ``InvalidServiceName``;
- a permissions boundary that does not exist (``CreateRole``, ``CreateUser``, ``Put*PermissionsBoundary``):
  ``NoSuchEntity``.

``refuse`` is called by the control plane's front for every AWS call before moto sees it; it answers None (let the
call through) or (HTTP status, content type, body).
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from xml.sax.saxutils import escape

from moto.backends import get_backend

QUERY_PROTOCOL = ("ec2", "iam", "sts")
BOUNDARY_ACTIONS = ("CreateRole", "CreateUser", "PutRolePermissionsBoundary", "PutUserPermissionsBoundary")


@functools.lru_cache(maxsize=None)
def known_regions() -> frozenset:
    """Every region of every partition botocore knows, for any service (and the global pseudo-regions)."""
    import boto3

    session = boto3.session.Session()
    regions = {"aws-global", "aws-cn-global", "aws-us-gov-global"}
    for partition in session.get_available_partitions():
        for service in ("ec2", "ssm", "s3", "sts", "logs", "kms"):
            regions.update(session.get_available_regions(service, partition_name=partition))
    return frozenset(regions)


@functools.lru_cache(maxsize=None)
def ec2_filter_names(action: str) -> frozenset | None:
    """The filter names an EC2 Describe* action documents (botocore's service model), None when it documents none."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    try:
        members = model.operation_model(action).input_shape.members
    except Exception:  # noqa: BLE001 - not an EC2 action botocore knows
        return None
    member = members.get("Filters") or members.get("Filter")
    names = set(re.findall(r"<code>([A-Za-z0-9.:\-]+)</code>", member.documentation if member else ""))
    return frozenset(names) or None


def _ec2_error(code: str, message: str, status: int = 400) -> tuple:
    xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>"
           f"<Message>{escape(message)}</Message></Error></Errors><RequestID>lab-refused</RequestID></Response>")
    return status, "text/xml", xml.encode()


def _query_error(code: str, message: str, status: int) -> tuple:
    xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
           "</Error><RequestId>lab-refused</RequestId></ErrorResponse>")
    return status, "text/xml", xml.encode()


def _region_refusal(service: str, json_target: str, region: str) -> tuple:
    message = f"Credential should be scoped to a valid region, not '{region}'. "
    if json_target:
        body = json.dumps({"__type": "InvalidSignatureException", "message": message}).encode()
        return 403, "application/x-amz-json-1.1", body
    if service == "s3":
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>'
               f"<Message>The authorization header is malformed; the region '{escape(region)}' is wrong</Message>"
               f"<Region>{escape(region)}</Region><RequestId>lab-refused</RequestId></Error>")
        return 400, "application/xml", xml.encode()
    if service == "ec2":
        return _ec2_error("SignatureDoesNotMatch", message, 403)
    return _query_error("SignatureDoesNotMatch", message, 403)


def _filter_refusal(action: str, form: dict) -> tuple | None:
    known = ec2_filter_names(action)
    if known is None:
        return None
    for key, values in sorted(form.items()):
        if re.fullmatch(r"Filter\.\d+\.Name", key):
            name = values[0]
            kebab = re.sub(r"[A-Z]", lambda upper: "-" + upper.group(0).lower(), name)  # isDefault, as EC2 takes
            if name not in known and kebab not in known and not name.startswith("tag:") and name != "tag-value":
                return _ec2_error("InvalidParameterValue", f"The filter '{name}' is invalid")
    return None


def _service_name_refusal(account: str, region: str, form: dict) -> tuple | None:
    name = (form.get("ServiceName") or [""])[0]
    if not name:
        return None
    ec2 = get_backend("ec2")[account][region]
    try:
        ec2.describe_vpc_endpoint_services([name], [], 1000, None, region)
    except Exception as error:  # noqa: BLE001 - moto's InvalidServiceName carries AWS's code and message
        code = getattr(error, "error_type", "InvalidServiceName")
        return _ec2_error(code, f"The Vpc Endpoint Service '{name}' does not exist")
    return None


def _boundary_refusal(account: str, form: dict) -> tuple | None:
    arn = (form.get("PermissionsBoundary") or [""])[0]
    if not arn:
        return None
    iam = get_backend("iam")[account]["global"]
    try:
        iam.get_policy(arn)
    except Exception:  # noqa: BLE001 - moto's NoSuchEntity: the policy does not exist
        return _query_error("NoSuchEntity", f"Scope ARN: {arn} does not exist or is not attachable.", 404)
    return None


def refuse(service: str, action: str, json_target: str, body: bytes, signed_region: str, account: str,
           default_region: str) -> tuple | None:
    """(status, content type, body) of AWS's refusal of this call, or None to serve it. ``signed_region`` is the
    region of the request's signature ("" when unsigned)."""
    if signed_region and signed_region not in known_regions():
        return _region_refusal(service, json_target, signed_region)
    region = signed_region or default_region
    if json_target or service not in QUERY_PROTOCOL or not body:
        return None
    if service == "ec2" and action.startswith("Describe"):
        return _filter_refusal(action, urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    if service == "ec2" and action == "CreateVpcEndpoint":
        return _service_name_refusal(account, region, urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    if service == "iam" and action in BOUNDARY_ACTIONS:
        return _boundary_refusal(account, urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    return None
