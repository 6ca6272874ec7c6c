"""CloudTrail's event history in the lab: every management call the lab serves is recorded, and LookupEvents
reads the record back, as AWS's 90-day event history does.

moto 5's CloudTrail backend keeps trails (CreateTrail, StartLogging, event selectors) but records no events and
does not serve LookupEvents. ``Recorder`` wraps the lab's WSGI front: it answers LookupEvents itself and, for any
other call, appends one event to ``Trail.events`` once the call is answered (a dict built from what the request
already carries, so the lab's cost per call stays flat; JSON is written only when a lookup reads it).

What is recorded, as AWS records it in the event history:

* management events of every service the lab serves (SSM, EC2, IAM, STS, KMS, CloudWatch Logs, S3 bucket
  calls, EC2 Instance Connect, tagging, CloudTrail itself), read-only ones too, failed calls with their
  ``errorCode``; not data events: S3 object calls and CloudWatch Logs' PutLogEvents, GetLogEvents and
  FilterLogEvents are not in the event history on AWS either;
* ``userIdentity`` from the access key the request is signed with (``IAMUser`` or ``AssumedRole`` with its
  session issuer; the lab's default key is moto's user ``moto``), ``sourceIPAddress`` and ``userAgent``;
* ``requestParameters``: JSON APIs' request with its member names in camelCase; the query APIs' (EC2, IAM, STS)
  form fields, flat; S3's bucket name. Secrets are hidden. ``SendCommand``'s ``parameters`` are hidden, as AWS
  hides them (``HIDDEN_DUE_TO_SECURITY_REASONS``): the commands are in Run Command's own history, not CloudTrail;
* ``responseElements`` of the session and command calls (``sessionId``, ``streamUrl``, and ``tokenValue``
  hidden as AWS hides it; ``SendCommand``'s command), null for the others;
* ``Resources``: the target node and the document of StartSession and SendCommand, the session of ResumeSession
  and TerminateSession.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid

from .. import common
from . import authz

LOOKUP_KEYS = ("EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource",
               "AccessKeyId")
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
TOKEN_HIDDEN = "Value hidden due to security reasons."
SESSION_ACTIONS = ("StartSession", "ResumeSession", "TerminateSession")
# Data events: not in the event history.
DATA_TARGETS = ("Logs_20140328.PutLogEvents", "Logs_20140328.GetLogEvents", "Logs_20140328.FilterLogEvents")
SECRET_FIELD = re.compile(r"password|plaintext|secret|privatekey|sessiontoken", re.IGNORECASE)
READ_ONLY = ("Describe", "Get", "List", "Lookup", "Head", "Search", "Simulate")
LIMIT = 200_000  # events kept; the oldest go first, as the 90-day window drops them on AWS


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _request_elements(value, hide_parameters: bool = False):
    """A JSON request as CloudTrail shows it: member names in camelCase (the keys of ``parameters``, which are the
    document's own names, unchanged), secrets hidden."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = _camel(str(key))
            if SECRET_FIELD.search(name):
                out[name] = HIDDEN
            elif name == "parameters":
                out[name] = HIDDEN if hide_parameters else item
            else:
                out[name] = _request_elements(item, hide_parameters)
        return out
    if isinstance(value, list):
        return [_request_elements(item, hide_parameters) for item in value]
    return value


def _iso(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Trail:
    """The event history of one lab (every region: each event carries its ``awsRegion``)."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.events: collections.deque = collections.deque(maxlen=LIMIT)
        self.lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._identities: dict[str, dict] = {}

    # --- recording ---------------------------------------------------------------------------------------
    def identity(self, key: str, region: str) -> dict:
        """``userIdentity`` of an access key; an access key belongs to one principal for life, so it is asked of
        moto's STS once."""
        found = self._identities.get(key)
        if found is not None:
            return found
        user_id, arn = authz.identity(self.account_id, region, key)
        account = arn.split(":")[4] if arn.count(":") >= 5 else self.account_id
        resource = arn.split(":", 5)[-1]
        if resource.startswith("assumed-role/"):
            role, session_name = resource.split("/")[1], resource.split("/", 2)[-1]
            partition = arn.split(":")[1]
            found = {"type": "AssumedRole", "principalId": user_id, "arn": arn, "accountId": account,
                     "accessKeyId": key,
                     "sessionContext": {
                         "sessionIssuer": {"type": "Role", "principalId": user_id.split(":", 1)[0],
                                           "arn": f"arn:{partition}:iam::{account}:role/{role}", "accountId": account,
                                           "userName": role}},
                     "_username": session_name}
        else:
            name = resource.rsplit("/", 1)[-1]
            found = {"type": "IAMUser", "principalId": user_id, "arn": arn, "accountId": account, "accessKeyId": key,
                     "userName": name, "_username": name}
        self._identities[key] = found
        return found

    def record(self, *, service: str, action: str, region: str, key: str, source: str, agent: str,
               request, response, error: str = "", error_message: str = "", resources: list | None = None) -> None:
        event = {
            "seq": next(self._sequence),
            "time": time.time(),
            "id": str(uuid.uuid4()),
            "service": service,
            "action": action,
            "region": region,
            "key": key or common.ACCESS_KEY,
            "who": self.identity(key or common.ACCESS_KEY, region),
            "source": source,
            "agent": agent,
            "request": request,
            "response": response,
            "error": error,
            "error_message": error_message,
            "resources": resources or [],
        }
        with self.lock:
            self.events.append(event)

    # --- LookupEvents --------------------------------------------------------------------------------------
    def _cloudtrail_event(self, event: dict, who: dict) -> dict:
        identity = {k: v for k, v in who.items() if not k.startswith("_")}
        if identity["type"] == "AssumedRole":
            identity["sessionContext"] = {**identity["sessionContext"], "attributes": {
                "creationDate": _iso(event["time"]), "mfaAuthenticated": "false"}}
        out = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": _iso(event["time"]),
            "eventSource": f"{event['service']}.amazonaws.com",
            "eventName": event["action"],
            "awsRegion": event["region"],
            "sourceIPAddress": event["source"],
            "userAgent": event["agent"],
            "requestParameters": event["request"],
            "responseElements": event["response"],
            "requestID": str(uuid.UUID(int=event["seq"])),
            "eventID": event["id"],
            "readOnly": event["action"].startswith(READ_ONLY),
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": self.account_id,
            "eventCategory": "Management",
        }
        if event["error"]:
            out["errorCode"] = event["error"]
            out["errorMessage"] = event["error_message"]
        return out

    def _matches(self, event: dict, who: dict, key: str, value: str) -> bool:
        if key == "EventId":
            return event["id"] == value
        if key == "EventName":
            return event["action"] == value
        if key == "ReadOnly":
            return str(event["action"].startswith(READ_ONLY)).lower() == value.lower()
        if key == "Username":
            return who["_username"] == value
        if key == "ResourceType":
            return any(kind == value for kind, _name in event["resources"])
        if key == "ResourceName":
            return any(name == value or name.rsplit("/", 1)[-1] == value for _kind, name in event["resources"])
        if key == "EventSource":
            return f"{event['service']}.amazonaws.com" == value
        if key == "AccessKeyId":
            return event["key"] == value
        return False

    def lookup_events(self, request: dict, region: str) -> dict:
        """One page of LookupEvents for ``region``: newest first, at most one lookup attribute, StartTime and
        EndTime inclusive, MaxResults 1-50 (50 by default), NextToken from the previous page."""
        from .ssmapi import ApiError  # pylint: disable=import-outside-toplevel

        attributes = request.get("LookupAttributes") or []
        if len(attributes) > 1:
            raise ApiError("InvalidLookupAttributesException",
                           "You cannot specify more than one lookup attribute in a LookupEvents request.")
        for attribute in attributes:
            if attribute.get("AttributeKey") not in LOOKUP_KEYS:
                raise ApiError("InvalidLookupAttributesException",
                               f"{attribute.get('AttributeKey')} is not a valid lookup attribute key; valid keys: "
                               f"{', '.join(LOOKUP_KEYS)}.")
        if request.get("EventCategory") not in (None, "insight"):
            raise ApiError("InvalidEventCategoryException", "The event category is not valid.")
        size = request.get("MaxResults", 50)
        if not isinstance(size, int) or not 1 <= size <= 50:
            raise ApiError("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
        start, end = request.get("StartTime"), request.get("EndTime")
        start = float(start) if start is not None else 0.0
        end = float(end) if end is not None else float("inf")
        if start > end:
            raise ApiError("InvalidTimeRangeException", "The start time of the time range is after its end time.")
        before = None
        if request.get("NextToken"):
            try:
                before = int(json.loads(base64.b64decode(request["NextToken"]))["before"])
            except (ValueError, KeyError, TypeError):
                raise ApiError("InvalidNextTokenException", "The NextToken is not valid.") from None
        if request.get("EventCategory") == "insight":
            return {"Events": []}
        with self.lock:
            events = list(self.events)
        page, more = [], False
        for event in reversed(events):
            if before is not None and event["seq"] >= before:
                continue
            if event["region"] != region or not start <= event["time"] <= end:
                continue
            who = event["who"]
            if attributes and not self._matches(event, who, attributes[0].get("AttributeKey"),
                                                str(attributes[0].get("AttributeValue", ""))):
                continue
            if len(page) == size:
                more = True
                break
            page.append((event, who))
        out = {"Events": [{
            "EventId": event["id"],
            "EventName": event["action"],
            "ReadOnly": str(event["action"].startswith(READ_ONLY)).lower(),
            "AccessKeyId": event["key"],
            "EventTime": event["time"],
            "EventSource": f"{event['service']}.amazonaws.com",
            "Username": who["_username"],
            "Resources": [{"ResourceType": kind, "ResourceName": name} for kind, name in event["resources"]],
            "CloudTrailEvent": json.dumps(self._cloudtrail_event(event, who)),
        } for event, who in page]}
        if more:
            out["NextToken"] = base64.b64encode(json.dumps({"before": page[-1][0]["seq"]}).encode()).decode()
        return out


class Recorder:
    """WSGI wrapper of the lab's front: serves LookupEvents, and records every other management call once it is
    answered."""

    def __init__(self, app, trail: Trail, registry) -> None:
        self.app = app
        self.trail = trail
        self.registry = registry
        self.region = registry.region

    def __call__(self, environ, start_response):
        from .controlplane import LabApp  # pylint: disable=import-outside-toplevel

        path = environ.get("PATH_INFO", "")
        if path.startswith("/_lab/") or path.startswith(f"/amazon-ssm-{self.region}/"):
            return self.app(environ, start_response)
        body = LabApp._body(environ)
        service = LabApp._service(environ)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        region = LabApp._signed_region(environ) or self.region
        if target.endswith("CloudTrail_20131101.LookupEvents"):
            # Counted, delayed and throttled like every other call the lab serves (registry.faults).
            self.registry.count_call("cloudtrail:LookupEvents", LabApp._signed_region(environ))
            faults = self.registry.faults
            if faults.api_delay:
                time.sleep(faults.api_delay)
            if faults.throttled():
                return LabApp._json(start_response, 400, {"__type": "ThrottlingException", "message": "Rate exceeded"},
                                    {"x-amzn-ErrorType": "ThrottlingException"})
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = {}
            return self._lookup(request, region, environ, start_response)
        if not service or target in DATA_TARGETS or (service == "s3" and self._s3_object_call(environ)):
            return self.app(environ, start_response)
        action = target.rsplit(".", 1)[-1] if target else LabApp._query_action(body, environ)
        if service == "s3":
            action = self._s3_action(environ)
        status = {}

        def capture(code, headers, exc_info=None):
            status["code"], status["headers"] = code, headers
            return start_response(code, headers, exc_info)

        response = self.app(environ, capture)
        failed = not str(status.get("code", "200")).startswith("2")
        keep = failed or "code" not in status or (service == "ssm" and action in SESSION_ACTIONS + ("SendCommand",))
        if keep:
            chunks = list(response)
            if hasattr(response, "close"):
                response.close()
            response = chunks
        try:
            self._record(service, action, region, body, environ, status, response if keep else None)
        except Exception:  # noqa: BLE001 - the record never fails the call it records
            pass
        return response

    @staticmethod
    def _s3_object_call(environ) -> bool:
        _bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
        return bool(key)

    @staticmethod
    def _s3_action(environ) -> str:
        method = environ.get("REQUEST_METHOD", "GET")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        sub = next((name for name in ("policy", "encryption", "versioning", "lifecycle", "publicAccessBlock",
                                      "ownershipControls", "tagging", "acl", "logging") if name in query), "")
        verb = {"GET": "Get", "HEAD": "Head", "PUT": "Put", "DELETE": "Delete", "POST": "Post"}.get(method, method)
        if not sub:
            return {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(method, "ListObjects")
        return f"{verb}Bucket{sub[:1].upper()}{sub[1:]}"

    def _lookup(self, request: dict, region: str, environ, start_response):
        from .controlplane import LabApp  # pylint: disable=import-outside-toplevel
        from .ssmapi import ApiError  # pylint: disable=import-outside-toplevel

        try:
            result = self.trail.lookup_events(request, region)
        except ApiError as error:
            return LabApp._json(start_response, error.status, {"__type": error.code, "message": error.message},
                                {"x-amzn-ErrorType": error.code})
        self._record("cloudtrail", "LookupEvents", region, json.dumps(request).encode(), environ, {}, None)
        return LabApp._json(start_response, 200, result)

    def _record(self, service: str, action: str, region: str, body: bytes, environ, status: dict, chunks) -> None:
        key = authz.access_key(environ.get("HTTP_AUTHORIZATION", ""), environ.get("QUERY_STRING", ""))
        error = message = ""
        payload = b"".join(chunks) if chunks is not None else b""
        if not str(status.get("code", "200")).startswith("2"):
            headers = dict((k.lower(), v) for k, v in status.get("headers") or [])
            error = headers.get("x-amzn-errortype", "").split(":", 1)[0]
            text = payload.decode("utf-8", "replace")
            if not error:
                found = re.search(r"<Code>([^<]+)</Code>", text)
                error = found.group(1) if found else "InternalFailure"
            found = re.search(r"<Message>([^<]*)</Message>", text) or re.search(r'"[mM]essage"\s*:\s*"([^"]*)"', text)
            message = found.group(1) if found else ""
        request, response, resources = self._elements(service, action, body, environ, payload, bool(error))
        self.trail.record(service=service, action=action, region=region, key=key,
                          source=environ.get("REMOTE_ADDR", "127.0.0.1"), agent=environ.get("HTTP_USER_AGENT", ""),
                          request=request, response=response, error=error, error_message=message,
                          resources=resources)

    def _elements(self, service: str, action: str, body: bytes, environ, payload: bytes, failed: bool):
        """(requestParameters, responseElements, resources) of a call."""
        resources: list = []
        if service == "s3":
            bucket = environ.get("PATH_INFO", "").strip("/")
            return {"bucketName": bucket, "Host": environ.get("HTTP_HOST", "")}, None, resources
        if environ.get("HTTP_X_AMZ_TARGET"):
            try:
                raw = json.loads(body or b"{}")
            except ValueError:
                raw = {}
            request = _request_elements(raw, hide_parameters=action == "SendCommand")
        else:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if body else \
                urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            request = {_camel(k): (HIDDEN if SECRET_FIELD.search(k) else v[0] if len(v) == 1 else v)
                       for k, v in form.items() if k not in ("Action", "Version")} or None
            raw = {}
        response = None
        if service == "ssm" and action in SESSION_ACTIONS + ("SendCommand",) and not failed:
            try:
                result = json.loads(payload or b"{}")
            except ValueError:
                result = {}
            if action == "SendCommand":
                response = _request_elements(result, hide_parameters=True)
            else:
                response = {"sessionId": result.get("SessionId")}
                if action != "TerminateSession":
                    response.update(tokenValue=TOKEN_HIDDEN, streamUrl=result.get("StreamUrl"))
        if service == "ssm" and action == "StartSession":
            target = str(raw.get("Target", ""))
            resources.append(("AWS::SSM::ManagedInstance" if target.startswith("mi-") else "AWS::EC2::Instance",
                              target))
            resources.append(("AWS::SSM::Document", raw.get("DocumentName") or "SSM-SessionManagerRunShell"))
        elif service == "ssm" and action in ("ResumeSession", "TerminateSession"):
            resources.append(("AWS::SSM::Session", str(raw.get("SessionId", ""))))
        elif service == "ssm" and action == "SendCommand":
            for node in raw.get("InstanceIds") or []:
                resources.append(("AWS::EC2::Instance", node))
            resources.append(("AWS::SSM::Document", str(raw.get("DocumentName", ""))))
        return request, response, resources
