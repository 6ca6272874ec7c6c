"""The SSM actions moto lacks, with the request and response shapes and errors of the real JSON API."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import time

from moto.backends import get_backend

from .. import common
from ..nodes import agent_package
from . import authz, documents, prefs
from .registry import SERVICE_SETTING_DEFAULTS, Command, Invocation, Registry, Session

STDOUT_LIMIT = 24000
STDERR_LIMIT = 8000
LIST_OUTPUT_LIMIT = 2500

AWS_SESSION_DOCUMENTS = {
    "SSM-SessionManagerRunShell": "Standard_Stream",
    "AWS-StartSSHSession": "Port",
    "AWS-StartPortForwardingSession": "Port",
    "AWS-StartPortForwardingSessionToRemoteHost": "Port",
    "AWS-StartInteractiveCommand": "InteractiveCommands",
    "AWS-StartNonInteractiveCommand": "InteractiveCommands",
}
PORT_DEFAULTS = {
    "AWS-StartSSHSession": {"portNumber": ["22"]},
    "AWS-StartPortForwardingSession": {"portNumber": ["80"]},
    "AWS-StartPortForwardingSessionToRemoteHost": {"portNumber": ["80"]},
}
COMMAND_DOCUMENTS = documents.PLUGINS
CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _page(items: list, body: dict, default: int, low: int, high: int, field: str = "MaxResults") -> tuple[list, dict]:
    size = body.get(field)
    if size is None:
        size = default
    elif not isinstance(size, int) or not low <= size <= high:
        bound = f"less than or equal to {high}" if isinstance(size, int) and size > high else f"greater than or equal to {low}"
        raise _validation(
            f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy constraint: "
            f"Member must have value {bound}"
        )
    start = 0
    token = body.get("NextToken")
    if token:
        try:
            start = int(json.loads(base64.b64decode(token))["o"])
        except (ValueError, KeyError, TypeError):
            raise ApiError("InvalidNextToken", "The specified token isn't valid.")
    chunk = items[start:start + size]
    extra = {}
    if start + size < len(items):
        extra["NextToken"] = base64.b64encode(json.dumps({"o": start + size}).encode()).decode()
    return chunk, extra


def _page_size(body: dict, default: int, low: int, high: int, field: str = "MaxResults") -> int:
    size = body.get(field)
    if size is None:
        return default
    if not isinstance(size, int) or not low <= size <= high:
        bound = f"less than or equal to {high}" if isinstance(size, int) and size > high else f"greater than or equal to {low}"
        raise _validation(
            f"1 validation error detected: Value '{size}' at '{field[0].lower() + field[1:]}' failed to satisfy "
            f"constraint: Member must have value {bound}"
        )
    return size


def _snapshot_page(registry: Registry, rows_of, body: dict, size: int, token_field: str = "NextToken",
                   empty_token=None) -> tuple[list, dict]:
    """One page of a listing taken whole at its first page (``rows_of()``) and kept for the later ones, so a
    fleet of thousands is walked in linear time and every node is listed once even while statuses change."""
    token = body.get(token_field)
    if token:
        try:
            state = json.loads(base64.b64decode(token))
            key, start = state["s"], int(state["o"])
        except (ValueError, KeyError, TypeError):
            raise ApiError("InvalidNextToken", "The specified token isn't valid.")
        stored = registry.snapshots.get(key)
        if stored is None:
            raise ApiError("InvalidNextToken", "The specified token has expired.")
        rows = stored[1]
    else:
        rows, key, start = rows_of(), None, 0
    chunk = rows[start:start + size]
    extra = {} if empty_token is None else {token_field: empty_token}
    if start + size < len(rows):
        key = key or registry.snapshot(rows)
        extra[token_field] = base64.b64encode(json.dumps({"s": key, "o": start + size}).encode()).decode()
    return chunk, extra


def request_region(authorization: str, default: str) -> str:
    """The region a request is signed for: Credential=<key>/<date>/<region>/<service>/aws4_request."""
    if "Credential=" in authorization:
        parts = authorization.split("Credential=", 1)[1].split("/")
        if len(parts) > 2 and parts[2]:
            return parts[2]
    return default


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SsmApi:
    def __init__(self, registry: Registry, messages, endpoint: str) -> None:
        self.registry = registry
        self.messages = messages
        self.endpoint = endpoint

    def handles(self, action: str, body: dict) -> bool:
        if action in ("AddTagsToResource", "RemoveTagsFromResource", "ListTagsForResource"):
            return body.get("ResourceType") == "ManagedInstance"
        return hasattr(self, "action_" + action)

    def call(self, action: str, body: dict, authorization: str) -> dict:
        self.authorize(action, body, authorization)
        if action in ("AddTagsToResource", "RemoveTagsFromResource", "ListTagsForResource"):
            return self.managed_instance_tags(action, body, authorization)
        return getattr(self, "action_" + action)(body, authorization)

    # --- IAM -----------------------------------------------------------------------------------------------
    def authorize(self, action: str, body: dict, authorization: str) -> None:
        """AccessDeniedException unless the caller's identity-based policies allow the call (``authz``): only
        for callers that are IAM users or assumed roles; the lab's default credentials may do anything. Every
        action the lab serves itself (``authz.SERVED``) is judged, on the resources AWS's service authorization
        reference names for it."""
        if action not in authz.SERVED:
            return
        region = self._region(authorization)
        who = authz.caller(self.registry.account_id, region, authz.access_key(authorization))
        if who is None:
            return
        try:
            authz.require(who, f"ssm:{action}", self._resources(action, body, authorization, region))
        except authz.Denied as denied:
            raise ApiError("AccessDeniedException", denied.message()) from None

    def require(self, authorization: str, action: str, resources: list[tuple[str, dict]]) -> None:
        """AccessDeniedException unless the caller may ``action`` (service:Action) on ``resources``."""
        region = self._region(authorization)
        try:
            authz.require(authz.caller(self.registry.account_id, region, authz.access_key(authorization)), action,
                          resources)
        except authz.Denied as denied:
            raise ApiError("AccessDeniedException", denied.message()) from None

    def _resources(self, action: str, body: dict, authorization: str, region: str) -> list[tuple[str, dict]]:
        """The (resource ARN, condition context) pairs an SSM action is authorized against."""
        account, partition = self.registry.account_id, authz.partition_of(region)

        def node_resource(node_id: str, extra: dict | None = None) -> tuple[str, dict]:
            node = self.registry.nodes.get(node_id)
            where = self.registry.node_region(node) if node is not None else region
            context = authz.tag_context(self._tags(node)) if node is not None else {}
            return authz.node_arn(partition, where, account, node_id), {**context, **(extra or {})}

        def document(name: str) -> tuple[str, dict]:
            return authz.document_arn(partition, region, account, name), {}

        def association(association_id: str) -> tuple[str, dict]:
            return f"arn:{partition}:ssm:{region}:{account}:association/{association_id}", {}

        if action == "StartSession":
            return [node_resource(str(body.get("Target", ""))),
                    document(body.get("DocumentName") or prefs.PREFERENCES_DOCUMENT)]
        if action in ("ResumeSession", "TerminateSession"):
            session_id = str(body.get("SessionId", ""))
            session = self.registry.sessions.get(session_id)
            context = authz.session_context(session.owner_id, session.target) if session is not None else {}
            return [(authz.session_arn(partition, region, account, session_id), context)]
        if action == "SendCommand":
            try:
                targets = self._resolve_targets(body, authorization)
            except ApiError:
                targets = []  # the call itself fails with the error
            return [node_resource(node_id) for node_id in targets] + [document(str(body.get("DocumentName", "")))]
        if action == "GetConnectionStatus":
            return [node_resource(str(body.get("Target", "")))]
        if action in authz.TAG_ACTIONS:
            extra: dict = {}
            if action == "AddTagsToResource":
                tags = body.get("Tags") or []
                extra = {f"aws:RequestTag/{t.get('Key', '')}": [t.get("Value", "")] for t in tags}
                extra["aws:TagKeys"] = [t.get("Key", "") for t in tags]
            elif action == "RemoveTagsFromResource":
                extra = {"aws:TagKeys": list(body.get("TagKeys") or [])}
            return [node_resource(str(body.get("ResourceId", "")), extra)]
        if action == "ListDocumentVersions":
            return [document(str(body.get("Name", "")))]
        if action in authz.SERVICE_SETTING_ACTIONS:
            setting = str(body.get("SettingId", ""))
            if ":servicesetting" in setting:
                setting = setting.split(":servicesetting", 1)[1]
            return [(f"arn:{partition}:ssm:{region}:{account}:servicesetting{setting}", {})]
        if action == "CreateAssociation":
            nodes = [body["InstanceId"]] if body.get("InstanceId") else []
            for target in body.get("Targets") or []:
                if target.get("Key") == "InstanceIds":
                    nodes += [str(v) for v in target.get("Values") or [] if v != "*"]
            return [document(str(body.get("Name", "")))] + [node_resource(n) for n in dict.fromkeys(nodes)]
        if action == "StartAssociationsOnce":
            return [association(str(i)) for i in body.get("AssociationIds") or []] or [association("*")]
        if action in authz.ASSOCIATION_ACTIONS:
            if body.get("AssociationId"):
                return [association(str(body["AssociationId"]))]
            return [document(str(body.get("Name", ""))), node_resource(str(body.get("InstanceId", "")))]
        return [("*", {})]  # the list actions (authz.LIST_ACTIONS) name no resource type

    # --- helpers -------------------------------------------------------------------------------------------
    def _ec2(self, region: str | None = None):
        return get_backend("ec2")[self.registry.account_id][region or self.registry.region]

    def _region(self, authorization: str) -> str:
        return request_region(authorization, self.registry.region)

    def _tags(self, node) -> dict:
        """A managed node's tags: its SSM tags (hybrid nodes), or its EC2 tags (instances)."""
        if not node.is_ec2():
            return dict(node.tags)
        return dict(self._ec2(self.registry.node_region(node)).tags.get(node.id, {}))

    def _in_region(self, node, region: str | None) -> bool:
        return region is None or self.registry.node_region(node) == region

    def _registered(self, region: str | None = None, ids: list[str] | None = None) -> list:
        """Nodes the service knows in ``region`` (None: every region): those that ever reached it (or records
        made for scale tests). ``ids``: only these, looked up directly (a listing by id stays cheap in a fleet
        of thousands)."""
        if ids is None:
            candidates = list(self.registry.nodes.values())
        else:
            candidates = [self.registry.nodes[i] for i in dict.fromkeys(ids) if i in self.registry.nodes]
        found = []
        for node in candidates:
            if not self._in_region(node, region):
                continue
            status = self.registry.ping_status(node)
            if status is not None:
                found.append((node, status))
        return found

    # --- sessions ------------------------------------------------------------------------------------------
    def action_StartSession(self, body: dict, authorization: str) -> dict:
        target = body.get("Target", "")
        document = body.get("DocumentName") or "SSM-SessionManagerRunShell"
        session_type = AWS_SESSION_DOCUMENTS.get(document)
        custom = None
        if session_type is None:
            custom = prefs.session_document(self.registry, document)
            if custom is None:
                raise ApiError("InvalidDocument", f"Document with name {document} does not exist.")
            session_type = custom.get("sessionType", "Standard_Stream")
        parameters = {**PORT_DEFAULTS.get(document, {}), **(body.get("Parameters") or {})}
        if document == "AWS-StartPortForwardingSessionToRemoteHost" and not parameters.get("host"):
            raise ApiError("InvalidParameters", "Parameter host is required for AWS-StartPortForwardingSessionToRemoteHost.")
        node = self.registry.nodes.get(target)
        if node is None or self.registry.ping_status(node) != "Online" or node.kind == "record" \
                or not self._in_region(node, self._region(authorization)):
            raise ApiError("TargetNotConnected", f"{target} is not connected.")
        if self.registry.faults.session_start_delay:
            time.sleep(self.registry.faults.session_start_delay)
        name, owner, tags = prefs.caller(self.registry, authorization)
        preferences = prefs.preferences(self.registry)
        if custom is not None and session_type == "Standard_Stream":
            preferences = custom.get("inputs") or {}
        run_as = "ssm-user"
        if session_type == "Standard_Stream":
            run_as, error = prefs.run_as_user(preferences, tags)
            if error:
                raise ApiError("InvalidParameters", error)
        session = Session(
            id=f"{name}-{common.random_hex(17)}",
            target=target,
            document=document,
            session_type=session_type,
            parameters=parameters,
            owner=owner,
            reason=body.get("Reason", ""),
            token=common.random_hex(64),
            run_as=run_as or "ssm-user",
            preferences=preferences,
            owner_id=authz.identity(self.registry.account_id, self._region(authorization),
                                    authz.access_key(authorization))[0],
            token_key=authz.access_key(authorization),
            token_region=self._region(authorization),
        )
        session.output_url = prefs.output_urls(self.registry, session) if session_type == "Standard_Stream" else {}
        with self.registry.lock:
            self.registry.sessions[session.id] = session
        host, port = self.messages.host, self.messages.port
        return {
            "SessionId": session.id,
            "TokenValue": session.token,
            "StreamUrl": f"ws://{host}:{port}/v1/data-channel/{session.id}?role=publish_subscribe&cell-number=lab",
        }

    def action_ResumeSession(self, body: dict, authorization: str) -> dict:
        session = self.registry.sessions.get(body.get("SessionId", ""))
        if session is None:
            raise ApiError("DoesNotExistException", f"Session {body.get('SessionId')} does not exist.")
        if not session.active():
            raise ApiError("InvalidParameters", f"Session {session.id} is {session.status} and cannot be resumed.")
        session.token = common.random_hex(64)
        session.token_key, session.token_region = authz.access_key(authorization), self._region(authorization)
        host, port = self.messages.host, self.messages.port
        return {
            "SessionId": session.id,
            "TokenValue": session.token,
            "StreamUrl": f"ws://{host}:{port}/v1/data-channel/{session.id}?role=publish_subscribe&cell-number=lab",
        }

    def action_TerminateSession(self, body: dict, authorization: str) -> dict:
        session_id = body.get("SessionId", "")
        if session_id in self.registry.sessions:
            self.messages.terminate(session_id)
        return {"SessionId": session_id}

    def action_ListDocumentVersions(self, body: dict, authorization: str) -> dict:
        """moto stores document versions but does not serve ListDocumentVersions (NotImplementedError)."""
        name = body.get("Name") or ""
        try:
            documents = get_backend("ssm")[self.registry.account_id][self.registry.region]._get_documents(name)
        except Exception:  # noqa: BLE001 - moto raises its own InvalidDocument
            raise ApiError("InvalidDocument", f"Document with name {name} does not exist.")
        items = []
        for version, document in sorted(documents.versions.items(), key=lambda item: int(item[0])):
            item = {"Name": document.name, "DocumentVersion": version, "DocumentFormat": document.document_format,
                    "CreatedDate": document.created_date.timestamp(), "Status": "Active",
                    "IsDefaultVersion": version == documents.default_version}
            if document.version_name:
                item["VersionName"] = document.version_name
            items.append(item)
        chunk, extra = _page(items, body, default=50, low=1, high=50)
        return {"DocumentVersions": chunk, **extra}

    def action_DescribeSessions(self, body: dict, authorization: str) -> dict:
        state = body.get("State")
        if state not in ("Active", "History"):
            raise _validation("1 validation error detected: Value at 'state' failed to satisfy constraint: "
                              "Member must satisfy enum value set: [Active, History]")
        sessions = [s for s in self.registry.sessions.values() if s.active() == (state == "Active")]
        for item in body.get("Filters") or []:
            key, value = item.get("key"), item.get("value", "")
            if key == "Target":
                sessions = [s for s in sessions if s.target == value]
            elif key == "Owner":
                sessions = [s for s in sessions if s.owner == value]
            elif key == "Status":
                sessions = [s for s in sessions if s.status == value]
            elif key == "SessionId":
                sessions = [s for s in sessions if s.id == value]
            elif key in ("InvokedAfter", "InvokedBefore"):
                try:
                    limit = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    raise ApiError("InvalidFilterKey", f"Invalid date in filter {key}: {value}")
                sessions = [s for s in sessions if (s.started >= limit) == (key == "InvokedAfter")]
            else:
                raise ApiError("InvalidFilterKey", f"The filter key {key} is not valid.")
        sessions.sort(key=lambda s: s.started, reverse=True)
        chunk, extra = _page(sessions, body, 20, 1, 200)
        return {"Sessions": [self._session_json(s) for s in chunk], **extra}

    def _session_json(self, session: Session) -> dict:
        out = {
            "SessionId": session.id,
            "Target": session.target,
            "Status": session.status,
            "StartDate": session.started,
            "DocumentName": session.document,
            "Owner": session.owner,
            "Details": session.details,
            "OutputUrl": session.output_url,
            "AccessType": "Standard",
        }
        if session.reason:
            out["Reason"] = session.reason
        if session.ended:
            out["EndDate"] = session.ended
        if session.preferences.get("maxSessionDuration"):
            out["MaxSessionDuration"] = str(session.preferences["maxSessionDuration"])
        return out

    def action_GetConnectionStatus(self, body: dict, authorization: str) -> dict:
        target = body.get("Target", "")
        node = self.registry.nodes.get(target)
        online = node is not None and node.kind != "record" and self.registry.ping_status(node) == "Online" \
            and self._in_region(node, self._region(authorization))
        return {"Target": target, "Status": "connected" if online else "notconnected"}

    # --- managed nodes ---------------------------------------------------------------------------------------
    INSTANCE_FILTER_KEYS = ("InstanceIds", "AgentVersion", "PingStatus", "PlatformTypes", "ResourceType",
                            "AssociationStatus", "IamRole", "ActivationIds", "tag-key")

    def action_DescribeInstanceInformation(self, body: dict, authorization: str) -> dict:
        if body.get("InstanceInformationFilterList") and body.get("Filters"):
            raise ApiError("InvalidFilter", "Specify either InstanceInformationFilterList or Filters, not both.")
        filters = [(f.get("key"), f.get("valueSet") or []) for f in body.get("InstanceInformationFilterList") or []]
        filters += [(f.get("Key"), f.get("Values") or []) for f in body.get("Filters") or []]
        for key, values in filters:
            if key not in self.INSTANCE_FILTER_KEYS and not (key or "").startswith("tag:"):
                # Refused whether or not any node is registered (the check used to wait for the first node).
                raise ApiError("InvalidInstanceInformationFilterValue", f"The filter key {key} is not valid.")
            if not values:
                raise ApiError("InvalidFilterValue", f"The filter {key} needs at least one value.")
            if len(values) > 100:
                raise _validation("1 validation error detected: Value at 'filters.member.values' failed to satisfy "
                                  "constraint: Member must have length less than or equal to 100")
        size = _page_size(body, 50, 5, 50)
        ids = None
        for key, values in filters:
            if key == "InstanceIds":
                ids = [i for i in values if ids is None or i in ids]

        def rows_of() -> list:
            rows = []
            for node, status in self._registered(self._region(authorization), ids):
                info = self._instance_json(node, status)
                if all(self._matches(node, info, key, values) for key, values in filters):
                    rows.append(info)
            return rows

        chunk, extra = _snapshot_page(self.registry, rows_of, body, size)
        return {"InstanceInformationList": chunk, **extra}

    def _matches(self, node, info: dict, key: str, values: list) -> bool:
        simple = {
            "InstanceIds": "InstanceId",
            "AgentVersion": "AgentVersion",
            "PingStatus": "PingStatus",
            "PlatformTypes": "PlatformType",
            "ResourceType": "ResourceType",
            "AssociationStatus": "AssociationStatus",
            "IamRole": "IamRole",
            "ActivationIds": "ActivationId",
        }
        if key in simple:
            return str(info.get(simple[key], "")) in values
        if key == "tag-key":
            return any(k in values for k in self._tags(node))
        if key and key.startswith("tag:"):
            return self._tags(node).get(key[4:]) in values
        raise ApiError("InvalidInstanceInformationFilterValue", f"The filter key {key} is not valid.")

    def _instance_json(self, node, status: str) -> dict:
        platform = node.platform_info()
        info = {
            "InstanceId": node.id,
            "PingStatus": status,
            "LastPingDateTime": node.last_ping or node.registered_at,
            "AgentVersion": node.agent_version,
            "IsLatestVersion": node.agent_version == agent_package.AGENT_LATEST,
            "PlatformType": platform["PlatformType"],
            "PlatformName": platform["PlatformName"],
            "PlatformVersion": platform["PlatformVersion"],
            "ResourceType": node.resource_type(),
            "IPAddress": node.ip,
            "ComputerName": node.hostname,
            "AssociationStatus": "Success",
            "SourceId": node.id,
            "SourceType": "AWS::EC2::Instance" if node.resource_type() == "EC2Instance" else "AWS::SSM::ManagedInstance",
        }
        if not node.is_ec2():
            info.update({
                "ActivationId": "lab-activation",
                "IamRole": node.iam_role,
                "RegistrationDate": node.registered_at,
                "Name": node.name,
            })
        return info

    def managed_instance_tags(self, action: str, body: dict, authorization: str = "") -> dict:
        node = self.registry.nodes.get(body.get("ResourceId", ""))
        if node is None or node.is_ec2() or not self._in_region(node, self._region(authorization)):
            raise ApiError("InvalidResourceId", f"The resource ID {body.get('ResourceId')} is not valid.")
        with self.registry.lock:
            if action == "AddTagsToResource":
                node.tags.update({t["Key"]: t["Value"] for t in body.get("Tags") or []})
                return {}
            if action == "RemoveTagsFromResource":
                for key in body.get("TagKeys") or []:
                    node.tags.pop(key, None)
                return {}
            return {"TagList": [{"Key": k, "Value": v} for k, v in node.tags.items()]}

    # --- inventory (what amazon.aws.aws_ec2's use_ssm_inventory reads) ---------------------------------------
    INVENTORY_TYPE = "AWS:InstanceInformation"
    INVENTORY_OPERATORS = ("Equal", "NotEqual", "BeginWith", "LessThan", "GreaterThan", "Exists")

    def _inventory_content(self, node, status: str) -> dict:
        """The AWS:InstanceInformation inventory item of a node: every value a string, as on AWS."""
        platform = node.platform_info()
        return {
            "AgentType": "amazon-ssm-agent",
            "AgentVersion": node.agent_version,
            "ComputerName": node.hostname,
            "InstanceId": node.id,
            "InstanceStatus": "Active" if status == "Online" else status,
            "IpAddress": node.ip,
            "PlatformName": platform["PlatformName"],
            "PlatformType": platform["PlatformType"],
            "PlatformVersion": platform["PlatformVersion"],
            "ResourceType": node.resource_type(),
        }

    def _inventory_matches(self, content: dict, key: str, values: list, operator: str) -> bool:
        type_name, _, attribute = key.rpartition(".")
        if type_name != self.INVENTORY_TYPE:
            return False  # the lab records no other inventory type, so no node has data for it
        value = content.get(attribute)
        if operator == "Exists":
            return value is not None
        if value is None:
            return False
        if operator == "Equal":
            return value in values
        if operator == "NotEqual":
            return value not in values
        if operator == "BeginWith":
            return any(value.startswith(v) for v in values)
        if operator == "LessThan":
            return any(value < v for v in values)
        return any(value > v for v in values)

    def action_GetInventory(self, body: dict, authorization: str) -> dict:
        """GetInventory over the registered nodes' AWS:InstanceInformation (moto does not serve it). Filters
        ≤ 5 with 1–40 values each, MaxResults 1–50; Aggregators are not modelled."""
        if body.get("Aggregators"):
            raise ApiError("InvalidAggregatorException", "The lab does not model inventory aggregators.")
        filters = body.get("Filters")
        if filters is not None and not 1 <= len(filters) <= 5:
            raise _validation("1 validation error detected: Value at 'filters' failed to satisfy constraint: "
                              "Member must have length less than or equal to 5")
        parsed = []
        for item in filters or []:
            key, values, operator = item.get("Key") or "", item.get("Values") or [], item.get("Type") or "Equal"
            if not 1 <= len(values) <= 40:
                raise _validation("1 validation error detected: Value at 'filters.member.values' failed to satisfy "
                                  "constraint: Member must have length less than or equal to 40")
            if operator not in self.INVENTORY_OPERATORS:
                raise ApiError("InvalidFilter", f"The filter type {operator} is not valid.")
            if "." not in key:
                raise ApiError("InvalidFilterKey", f"The filter key {key} is not valid.")
            parsed.append((key, values, operator))
        wanted_types = [a.get("TypeName") for a in body.get("ResultAttributes") or []]
        size = _page_size(body, 50, 1, 50)
        ids = None
        for key, values, operator in parsed:
            if key == f"{self.INVENTORY_TYPE}.InstanceId" and operator == "Equal":
                ids = [i for i in values if ids is None or i in ids]

        def rows_of() -> list:
            rows = []
            for node, status in self._registered(self._region(authorization), ids):
                content = self._inventory_content(node, status)
                if all(self._inventory_matches(content, *f) for f in parsed):
                    data = {}
                    if not wanted_types or self.INVENTORY_TYPE in wanted_types:
                        data[self.INVENTORY_TYPE] = {
                            "TypeName": self.INVENTORY_TYPE, "SchemaVersion": "1.0",
                            "CaptureTime": _iso(node.last_ping or node.registered_at)[:19] + "Z",
                            "Content": [content],
                        }
                    rows.append({"Id": node.id, "Data": data})
            return rows

        chunk, extra = _snapshot_page(self.registry, rows_of, body, size)
        return {"Entities": chunk, **extra}

    # --- Resource Groups Tagging API, for managed instances (moto does not know them) -------------------------
    def tagging_get_resources(self, body: dict, authorization: str) -> dict:
        """GetResources with ResourceTypeFilters ``ssm:managed-instance``: the hybrid nodes' tags, as AWS lists
        them (only nodes that carry tags), ResourcesPerPage 1–100, TagFilters (key, optional values). An IAM caller
        needs tag:GetResources (on "*")."""
        self.require(authorization, "tag:GetResources", [("*", {})])
        if body.get("ResourceARNList"):
            raise ApiError("InvalidParameterException", "ResourceARNList is not supported by the lab.")
        size = _page_size(body, 100, 1, 100, field="ResourcesPerPage")
        region = self._region(authorization)
        tag_filters = [(f.get("Key"), f.get("Values") or []) for f in body.get("TagFilters") or []]

        def rows_of() -> list:
            rows = []
            for node in list(self.registry.nodes.values()):
                if node.is_ec2() or not node.tags or not self._in_region(node, region) \
                        or self.registry.ping_status(node) is None:
                    continue
                tags = dict(node.tags)
                if all(k in tags and (not v or tags[k] in v) for k, v in tag_filters):
                    rows.append({
                        "ResourceARN": f"arn:aws:ssm:{region}:{self.registry.account_id}:managed-instance/{node.id}",
                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                    })
            return rows

        chunk, extra = _snapshot_page(self.registry, rows_of, body, size, token_field="PaginationToken",
                                      empty_token="")
        return {"ResourceTagMappingList": chunk, **extra}

    # --- service settings ----------------------------------------------------------------------------------
    def _setting_id(self, body: dict) -> str:
        setting = body.get("SettingId", "")
        if ":servicesetting" in setting:
            setting = setting.split(":servicesetting", 1)[1]
        if setting not in SERVICE_SETTING_DEFAULTS:
            raise ApiError("ServiceSettingNotFound", f"The service setting {body.get('SettingId')} was not found.")
        return setting

    def _setting_json(self, setting: str) -> dict:
        stored = self.registry.settings.get(setting)
        arn = f"arn:aws:ssm:{self.registry.region}:{self.registry.account_id}:servicesetting{setting}"
        if stored is None:
            return {"SettingId": setting, "SettingValue": SERVICE_SETTING_DEFAULTS[setting], "ARN": arn,
                    "Status": "Default", "LastModifiedDate": 0, "LastModifiedUser": "System"}
        return {"SettingId": setting, "SettingValue": stored["value"], "ARN": arn, "Status": "Customized",
                "LastModifiedDate": stored["when"], "LastModifiedUser": stored["who"]}

    def action_GetServiceSetting(self, body: dict, authorization: str) -> dict:
        return {"ServiceSetting": self._setting_json(self._setting_id(body))}

    def action_UpdateServiceSetting(self, body: dict, authorization: str) -> dict:
        setting = self._setting_id(body)
        value = body.get("SettingValue")
        if not isinstance(value, str) or not value:
            raise _validation("SettingValue must be a non-empty string.")
        _name, owner, _tags = prefs.caller(self.registry, authorization)
        with self.registry.lock:
            self.registry.settings[setting] = {"value": value, "when": time.time(), "who": owner}
            for node in self.registry.nodes.values():
                node._cache = None
        return {}

    def action_ResetServiceSetting(self, body: dict, authorization: str) -> dict:
        setting = self._setting_id(body)
        with self.registry.lock:
            self.registry.settings.pop(setting, None)
            for node in self.registry.nodes.values():
                node._cache = None
        return {"ServiceSetting": self._setting_json(setting)}

    # --- Run Command ---------------------------------------------------------------------------------------
    def action_SendCommand(self, body: dict, authorization: str) -> dict:
        document = body.get("DocumentName", "")
        if document not in COMMAND_DOCUMENTS:
            raise ApiError("InvalidDocument", f"Document with name {document} does not exist.")
        parameters = body.get("Parameters") or {}
        try:
            documents.check(document, parameters)
        except documents.ParameterError as error:
            raise ApiError("InvalidParameters", str(error))
        parameters = documents.filled(document, parameters)
        concurrency = str(body.get("MaxConcurrency", "50"))
        errors = str(body.get("MaxErrors", "0"))
        if not CONCURRENCY.match(concurrency):
            raise _validation(f"Value '{concurrency}' at 'maxConcurrency' failed to satisfy constraint")
        if not ERRORS.match(errors):
            raise _validation(f"Value '{errors}' at 'maxErrors' failed to satisfy constraint")
        timeout = int(body.get("TimeoutSeconds", 3600))
        if not 30 <= timeout <= 2592000:
            raise _validation(f"Value '{timeout}' at 'timeoutSeconds' failed to satisfy constraint")
        targets = self._resolve_targets(body, authorization)
        cloudwatch = body.get("CloudWatchOutputConfig") or {}
        command = Command(
            id=common.random_hex(8) + "-" + "-".join(common.random_hex(n) for n in (4, 4, 4, 12)),
            document=document,
            parameters=parameters,
            instance_ids=list(body.get("InstanceIds") or []),
            targets=list(body.get("Targets") or []),
            comment=body.get("Comment", ""),
            max_concurrency=concurrency,
            max_errors=errors,
            timeout_seconds=timeout,
            output_bucket=body.get("OutputS3BucketName", ""),
            output_prefix=body.get("OutputS3KeyPrefix", ""),
            cloudwatch=cloudwatch,
        )
        for node_id in targets:
            command.invocations[node_id] = Invocation(command.id, node_id)
        with self.registry.lock:
            self.registry.commands[command.id] = command
        self.messages.soon(lambda: common.spawn(self._dispatch(command)))
        return {"Command": self._command_json(command)}

    def _resolve_targets(self, body: dict, authorization: str = "") -> list[str]:
        ids = body.get("InstanceIds")
        targets = body.get("Targets")
        if bool(ids) == bool(targets):
            raise _validation("Specify either InstanceIds or Targets.")
        registered = {node.id: node for node, _status in self._registered(self._region(authorization))}
        if ids:
            if len(ids) > 50:
                raise _validation("Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50")
            unknown = [i for i in ids if i not in registered]
            if unknown:
                raise ApiError("InvalidInstanceId", f"Instances {unknown} not in a valid state for account {self.registry.account_id}")
            return list(dict.fromkeys(ids))
        chosen = list(registered)
        for target in targets:
            key, values = target.get("Key", ""), target.get("Values") or []
            if key == "InstanceIds":
                chosen = [i for i in chosen if i in values]
            elif key == "tag-key":
                chosen = [i for i in chosen if any(k in values for k in self._tags(registered[i]))]
            elif key.startswith("tag:"):
                chosen = [i for i in chosen if self._tags(registered[i]).get(key[4:]) in values]
            else:
                raise ApiError("InvalidTarget", f"The target key {key} is not valid.")
        return chosen

    @staticmethod
    def _limit(value: str, total: int) -> int:
        if value.endswith("%"):
            return max(int(total * int(value[:-1]) / 100), 0)
        return int(value)

    async def _dispatch(self, command: Command) -> None:
        ids = list(command.invocations)
        concurrency = max(self._limit(command.max_concurrency, len(ids)), 1)
        allowed_errors = self._limit(command.max_errors, len(ids))
        gate = asyncio.Semaphore(concurrency)
        state = {"errors": 0, "stopped": False}
        if ids:
            command.status = command.details = "InProgress"

        async def one(node_id: str) -> None:
            async with gate:
                invocation = command.invocations[node_id]
                if state["stopped"]:
                    invocation.status = invocation.details = "Cancelled"
                    return
                await self._invoke(command, invocation)
                if invocation.details in ("Failed", "ExecutionTimedOut"):
                    state["errors"] += 1
                    if state["errors"] > allowed_errors:
                        state["stopped"] = True

        await asyncio.gather(*(one(i) for i in ids))
        _done, failed, delivery = command.counts()
        if state["stopped"]:
            command.status, command.details = "Failed", "Failed"
        elif failed or delivery:
            command.status, command.details = "Failed", "Incomplete"
        else:
            command.status = command.details = "Success"

    async def _invoke(self, command: Command, invocation: Invocation) -> None:
        node = self.registry.nodes[invocation.instance_id]
        deadline = time.time() + command.timeout_seconds
        while node.agent is None or self.registry.ping_status(node) != "Online":
            if invocation.status == "Cancelled":  # CancelCommand while the node was away
                return
            if time.time() >= deadline:
                invocation.status, invocation.details = "TimedOut", "DeliveryTimedOut"
                return
            invocation.status = invocation.details = "Delayed" if node.ever_online else "Pending"
            await asyncio.sleep(0.5)
        invocation.status = invocation.details = "InProgress"
        invocation.started = time.time()
        execution_timeout = int((command.parameters.get("executionTimeout") or ["3600"])[0])
        workdir = (command.parameters.get("workingDirectory") or [""])[0]
        commands = command.parameters.get("commands")
        if command.document == documents.ANSIBLE:
            commands, execution_timeout = await asyncio.get_running_loop().run_in_executor(
                None, documents.ansible_script, command.parameters, lambda b, k: self._presign(b, k, node))
        result = await self.messages.run_on_agent(command.id, node.id, {
            "t": "run",
            "command": command.id,
            "document": command.document,
            "commands": commands,
            "working_directory": workdir,
            "timeout": execution_timeout,
        }, execution_timeout + 30)
        invocation.ended = time.time()
        if result is None:
            invocation.status, invocation.details, invocation.response_code = "Failed", "Undeliverable", -1
            return
        stdout, stderr = result.get("stdout", ""), result.get("stderr", "")
        # As on AWS, the output is in S3 and CloudWatch (and its URLs are set) before the invocation shows its end.
        stderr += await asyncio.get_running_loop().run_in_executor(None, self._store_output, command, invocation,
                                                                   stdout, stderr)
        invocation.stdout, invocation.stderr = stdout[:STDOUT_LIMIT], stderr[:STDERR_LIMIT]
        invocation.response_code = int(result.get("code", -1))
        status = result.get("status", "Failed")
        invocation.details = {"TimedOut": "ExecutionTimedOut"}.get(status, status)
        invocation.status = status

    def _presign(self, bucket: str, key: str, node=None) -> str:
        """A URL the node fetches an object from (what the agent downloads with the instance profile on AWS): judged
        first with the node's role session and the endpoint it goes through (``documents.DownloadDenied``)."""
        import boto3

        denial = self.registry.node_get_object_denial(node, bucket, key) if node is not None else None
        if denial is not None:
            raise documents.DownloadDenied(
                f"AccessDenied: {denial.message(quoted=denial.action.startswith('s3:'))}")

        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=self.registry.region,
                          aws_access_key_id=common.ACCESS_KEY, aws_secret_access_key=common.SECRET_KEY,
                          config=common.internal_config(signature_version="s3v4"))
        return s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)

    def _store_output(self, command: Command, invocation: Invocation, stdout: str, stderr: str) -> str:
        """Output to S3 and CloudWatch Logs as the command asks; returns the uploads that failed, one line each."""
        import boto3

        failed = ""
        kwargs = dict(endpoint_url=self.endpoint, region_name=self.registry.region,
                      aws_access_key_id=common.ACCESS_KEY, aws_secret_access_key=common.SECRET_KEY,
                      config=common.internal_config())
        plugin = COMMAND_DOCUMENTS[command.document]
        step = plugin.replace(":", "")
        node = self.registry.nodes.get(invocation.instance_id)
        if command.output_bucket:
            base = "/".join(p for p in (command.output_prefix.strip("/"), command.id, invocation.instance_id,
                                        step, "0." + step) if p)
            s3 = boto3.client("s3", **kwargs)
            for name, text in (("stdout", stdout), ("stderr", stderr)):
                if text:
                    # The agent uploads with the node's role session (its policies, the bucket's KMS key), through
                    # the VPC endpoint that carries it.
                    denial = self.registry.node_put_object_denial(node, command.output_bucket, f"{base}/{name}")
                    if denial is not None:
                        failed += (f"\nFailed uploading {name} to s3://{command.output_bucket}/{base}/{name} "
                                   f"err:AccessDenied: {denial.message(quoted=denial.action.startswith('s3:'))}")
                        continue
                    try:
                        s3.put_object(Bucket=command.output_bucket, Key=f"{base}/{name}", Body=text.encode())
                    except s3.exceptions.ClientError as error:
                        # The agent logs the failed upload and the invocation still ends with the script's status:
                        # the lab says it in the standard error too, where a caller sees it.
                        failed += (f"\nFailed uploading {name} to s3://{command.output_bucket}/{base}/{name} "
                                   f"err:{error.response['Error']['Code']}: {error.response['Error']['Message']}")
                        continue
                    url = f"https://s3.{self.registry.region}.amazonaws.com/{command.output_bucket}/{base}/{name}"
                    setattr(invocation, f"{name}_url", url)
        if str(command.cloudwatch.get("CloudWatchOutputEnabled", False)).lower() == "true":
            group = command.cloudwatch.get("CloudWatchLogGroupName") or f"/aws/ssm/{command.document}"
            group_arn = f"arn:{authz.partition_of(self.registry.region)}:logs:{self.registry.region}:" \
                        f"{self.registry.account_id}:log-group:{group}"
            logs = boto3.client("logs", **kwargs)
            exists = group in get_backend("logs")[self.registry.account_id][self.registry.region].groups
            # The agent creates the group when it is missing, then a stream per output, with the node's role session;
            # a refusal is in the agent's log on AWS, and in the standard error here, as for S3.
            denial = None if exists else self.registry.node_write_denial(node, "logs", "logs:CreateLogGroup", group_arn)
            if denial is not None:
                failed += (f"\nFailed creating CloudWatch log group {group} err:AccessDeniedException: "
                           f"{denial.message()}")
            elif not exists:
                try:
                    logs.create_log_group(logGroupName=group)
                except logs.exceptions.ResourceAlreadyExistsException:
                    pass
            for name, text in (("stdout", stdout), ("stderr", stderr)):
                if text and denial is None:
                    stream = f"{command.id}/{invocation.instance_id}/{plugin.replace(':', '-')}/{name}"
                    refused = next(filter(None, (
                        self.registry.node_write_denial(node, "logs", action, f"{group_arn}:log-stream:{stream}")
                        for action in ("logs:CreateLogStream", "logs:PutLogEvents"))), None)
                    if refused is not None:
                        failed += (f"\nFailed uploading {name} to CloudWatch log group {group} stream {stream} "
                                   f"err:AccessDeniedException: {refused.message()}")
                        continue
                    logs.create_log_stream(logGroupName=group, logStreamName=stream)
                    logs.put_log_events(logGroupName=group, logStreamName=stream,
                                        logEvents=[{"timestamp": int(time.time() * 1000), "message": text}])
        return failed

    def _command_json(self, command: Command) -> dict:
        done, errors, delivery = command.counts()
        return {
            "CommandId": command.id,
            "DocumentName": command.document,
            "DocumentVersion": "$DEFAULT",
            "Comment": command.comment,
            "ExpiresAfter": command.requested + command.timeout_seconds + 3600,
            "Parameters": command.parameters,
            "InstanceIds": command.instance_ids,
            "Targets": command.targets,
            "RequestedDateTime": command.requested,
            "Status": command.status,
            "StatusDetails": command.details,
            "OutputS3Region": self.registry.region,
            "OutputS3BucketName": command.output_bucket,
            "OutputS3KeyPrefix": command.output_prefix,
            "MaxConcurrency": command.max_concurrency,
            "MaxErrors": command.max_errors,
            "TargetCount": len(command.invocations),
            "CompletedCount": done,
            "ErrorCount": errors,
            "DeliveryTimedOutCount": delivery,
            "ServiceRole": "",
            "NotificationConfig": {},
            "CloudWatchOutputConfig": command.cloudwatch,
            "TimeoutSeconds": command.timeout_seconds,
        }

    def _find_commands(self, body: dict) -> list[Command]:
        commands = list(self.registry.commands.values())
        if body.get("CommandId"):
            commands = [c for c in commands if c.id == body["CommandId"]]
            if not commands:
                raise ApiError("InvalidCommandId", "The command ID is not valid.")
        if body.get("InstanceId"):
            commands = [c for c in commands if body["InstanceId"] in c.invocations]
        for item in body.get("Filters") or []:
            key, value = item.get("key"), item.get("value", "")
            if key == "Status":
                commands = [c for c in commands if c.status == value]
            elif key == "DocumentName":
                commands = [c for c in commands if c.document == value]
            elif key in ("InvokedAfter", "InvokedBefore"):
                limit = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
                commands = [c for c in commands if (c.requested >= limit) == (key == "InvokedAfter")]
            else:
                raise ApiError("InvalidFilterKey", f"The filter key {key} is not valid.")
        commands.sort(key=lambda c: c.requested, reverse=True)
        return commands

    def action_ListCommands(self, body: dict, authorization: str) -> dict:
        chunk, extra = _page(self._find_commands(body), body, 50, 1, 50)
        return {"Commands": [self._command_json(c) for c in chunk], **extra}

    def action_ListCommandInvocations(self, body: dict, authorization: str) -> dict:
        rows = []
        for command in self._find_commands(body):
            for invocation in command.invocations.values():
                if body.get("InstanceId") and invocation.instance_id != body["InstanceId"]:
                    continue
                rows.append((command, invocation))
        chunk, extra = _page(rows, body, 50, 1, 50)
        return {"CommandInvocations": [self._invocation_json(c, i, bool(body.get("Details"))) for c, i in chunk],
                **extra}

    def _invocation_json(self, command: Command, invocation: Invocation, details: bool) -> dict:
        out = {
            "CommandId": command.id,
            "InstanceId": invocation.instance_id,
            "InstanceName": self.registry.nodes[invocation.instance_id].hostname,
            "Comment": command.comment,
            "DocumentName": command.document,
            "DocumentVersion": "$DEFAULT",
            "RequestedDateTime": command.requested,
            "Status": invocation.status,
            "StatusDetails": invocation.details,
            "StandardOutputUrl": invocation.stdout_url,
            "StandardErrorUrl": invocation.stderr_url,
            "ServiceRole": "",
            "NotificationConfig": {},
            "CloudWatchOutputConfig": command.cloudwatch,
            "CommandPlugins": [],
        }
        if details:
            output = invocation.stdout
            if invocation.stderr:
                output = f"{output}\n----------ERROR-------\n{invocation.stderr}"
            plugin = {
                "Name": COMMAND_DOCUMENTS[command.document],
                "Status": invocation.status,
                "StatusDetails": invocation.details,
                "ResponseCode": invocation.response_code,
                "Output": output[:LIST_OUTPUT_LIMIT],
                "StandardOutputUrl": invocation.stdout_url,
                "StandardErrorUrl": invocation.stderr_url,
                "OutputS3Region": self.registry.region,
                "OutputS3BucketName": command.output_bucket,
                "OutputS3KeyPrefix": command.output_prefix,
            }
            if invocation.started:
                plugin["ResponseStartDateTime"] = invocation.started
            if invocation.ended:
                plugin["ResponseFinishDateTime"] = invocation.ended
            out["CommandPlugins"] = [plugin]
        return out

    def action_GetCommandInvocation(self, body: dict, authorization: str) -> dict:
        command = self.registry.commands.get(body.get("CommandId", ""))
        invocation = command.invocations.get(body.get("InstanceId", "")) if command else None
        if invocation is None:
            raise ApiError("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist) when calling the "
                           "GetCommandInvocation operation")
        plugin = COMMAND_DOCUMENTS[command.document]
        if body.get("PluginName") and body["PluginName"] != plugin:
            raise ApiError("InvalidPluginName", f"The plugin name {body['PluginName']} is not valid.")
        elapsed = (invocation.ended or time.time()) - invocation.started if invocation.started else 0
        return {
            "CommandId": command.id,
            "InstanceId": invocation.instance_id,
            "Comment": command.comment,
            "DocumentName": command.document,
            "DocumentVersion": "$DEFAULT",
            "PluginName": plugin,
            "ResponseCode": invocation.response_code,
            "ExecutionStartDateTime": _iso(invocation.started),
            "ExecutionElapsedTime": f"PT{elapsed:.3f}S",
            "ExecutionEndDateTime": _iso(invocation.ended),
            "Status": invocation.status,
            "StatusDetails": invocation.details,
            "StandardOutputContent": invocation.stdout,
            "StandardOutputUrl": invocation.stdout_url,
            "StandardErrorContent": invocation.stderr,
            "StandardErrorUrl": invocation.stderr_url,
            "CloudWatchOutputConfig": command.cloudwatch or {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
        }

    def action_CancelCommand(self, body: dict, authorization: str) -> dict:
        command = self.registry.commands.get(body.get("CommandId", ""))
        if command is None:
            raise ApiError("InvalidCommandId", "The command ID is not valid.")
        for invocation in command.invocations.values():
            if invocation.status in ("Pending", "Delayed") and (
                not body.get("InstanceIds") or invocation.instance_id in body["InstanceIds"]
            ):
                invocation.status = invocation.details = "Cancelled"
        return {}
