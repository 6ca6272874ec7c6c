# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit trail of Session Manager and Run Command, joined from CloudTrail events, for ssm_audit_info.

Pure logic, no AWS calls: the module feeds CloudTrail events one at a time to ``AuditJoin.add`` (each event is
reduced to the few fields the audit needs and dropped), then adds what other APIs know (the session history, node
names, the commands' text) and reads the joined records.

Internal to bastionless.ssm: no compatibility promise.
"""

import datetime
import re
from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from urllib.parse import unquote
from urllib.parse import urlparse

HISTORY_DAYS = 90  # CloudTrail's event history
SESSION_EVENTS = ("StartSession", "ResumeSession", "TerminateSession")
AUDITED_EVENTS = SESSION_EVENTS + ("SendCommand",)
SHELL_DOCUMENT = "SSM-SessionManagerRunShell"
# Documents whose sessions carry a byte stream, not a shell: Session Manager writes no transcript for them.
PORT_DOCUMENTS = ("AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost",
                  "AWS-StartSSHSession")
PORT_DEFAULTS = {"AWS-StartPortForwardingSession": "80", "AWS-StartPortForwardingSessionToRemoteHost": "80",
                 "AWS-StartSSHSession": "22"}
ACTIVE_STATUSES = ("Connecting", "Connected", "Disconnected", "Terminating")
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- times -------------------------------------------------------------------------------------------------


def parse_when(value: str, now: datetime.datetime, option: str) -> datetime.datetime:
    """``value`` as an aware UTC datetime: V(now), a duration ago (``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601
    date or time (``Z`` or an offset; none means UTC). ValueError naming ``option`` and the forms it takes."""
    text = str(value).strip()
    if text.lower() == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        return now - datetime.timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
    iso_text = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        parsed = datetime.datetime.fromisoformat(iso_text)
    except ValueError:
        raise ValueError(
            f"{option} must be 'now', a duration ago such as 30m, 12h, 7d or 2w, or an ISO 8601 date or time such "
            f"as 2025-01-31 or 2025-01-31T08:00:00Z, not {value!r}."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


def history_gap(start: datetime.datetime, now: datetime.datetime) -> Optional[str]:
    """A plain warning when the range begins before CloudTrail's event history (90 days back from ``now``)."""
    oldest = now - datetime.timedelta(days=HISTORY_DAYS)
    if start >= oldest:
        return None
    return (
        f"The range begins at {iso(start)}, but CloudTrail's event history (LookupEvents) keeps only the last "
        f"{HISTORY_DAYS} days, back to {iso(oldest)}: events before that are not in this result. A trail that "
        "delivers to S3, or a CloudTrail Lake event data store, keeps them; query it there (Athena or Lake)."
    )


def iso(value: Any) -> Optional[str]:
    """ISO 8601 in UTC (``Z``) for an aware datetime, an epoch or a CloudTrail time string; None for nothing."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if isinstance(value, str):
        return value
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- one event ---------------------------------------------------------------------------------------------


def principal(detail: Dict[str, Any]) -> Dict[str, Any]:
    """Who made a call: ARN, identity type, the name LookupEvents' Username shows (an IAM user's name, a role
    session's name), the role of a role session, access key, source address and user agent."""
    identity = detail.get("userIdentity") or {}
    arn = identity.get("arn") or ""
    kind = identity.get("type") or ""
    name = identity.get("userName") or ""
    role = None
    if kind == "AssumedRole":
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        role = issuer.get("arn") or None
        name = arn.rsplit("/", 1)[-1] if arn else ""
    elif not name and arn:
        name = arn.rsplit("/", 1)[-1] if "/" in arn else arn.rsplit(":", 1)[-1]
    return {
        "arn": arn,
        "type": kind,
        "name": name,
        "role_arn": role,
        "account_id": identity.get("accountId") or detail.get("recipientAccountId"),
        "access_key_id": identity.get("accessKeyId"),
        "source_ip": detail.get("sourceIPAddress"),
        "user_agent": detail.get("userAgent"),
    }


def forwarding(document: str, parameters: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Where a port session leads: the host (``localhost``: the node itself), its port and the client's local port;
    None for sessions that forward nothing."""
    if document not in PORT_DEFAULTS:
        return None

    def first(name: str) -> Optional[str]:
        value = (parameters or {}).get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        return None if value in (None, "") else str(value)

    host = first("host") if document == "AWS-StartPortForwardingSessionToRemoteHost" else "localhost"
    return {"host": host, "port": first("portNumber") or PORT_DEFAULTS[document], "local_port": first("localPortNumber")}


def reduce_event(detail: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The few fields the audit keeps of one CloudTrailEvent (parsed JSON), or None for an event it does not use."""
    name = detail.get("eventName")
    if name not in AUDITED_EVENTS or detail.get("eventSource") != "ssm.amazonaws.com":
        return None
    request = detail.get("requestParameters") or {}
    response = detail.get("responseElements") or {}
    out = {
        "event": name,
        "time": detail.get("eventTime"),
        "region": detail.get("awsRegion"),
        "principal": principal(detail),
        "error_code": detail.get("errorCode"),
        "error_message": detail.get("errorMessage"),
    }
    if name == "StartSession":
        document = request.get("documentName") or SHELL_DOCUMENT
        parameters = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
        out.update(session_id=response.get("sessionId"), node_id=request.get("target"), document=document,
                   parameters=parameters, reason=request.get("reason") or "")
    elif name in ("ResumeSession", "TerminateSession"):
        out["session_id"] = request.get("sessionId") or response.get("sessionId")
    else:
        command = response.get("command") or {}
        targets = request.get("targets") or command.get("targets") or []
        out.update(command_id=command.get("commandId"), document=request.get("documentName"),
                   node_ids=list(request.get("instanceIds") or command.get("instanceIds") or []),
                   targets=[{"key": t.get("key"), "values": list(t.get("values") or [])} for t in targets],
                   comment=request.get("comment") or "")
    return out


# --- the join ----------------------------------------------------------------------------------------------


def _matches_principal(who: Dict[str, Any], wanted: Iterable[str]) -> bool:
    names = {who.get("arn"), who.get("name"), who.get("role_arn")}
    if who.get("role_arn"):
        names.add(who["role_arn"].rsplit("/", 1)[-1])
    return any(w in names for w in wanted)


class AuditJoin:
    """Sessions and Run Command invocations joined from CloudTrail events, filtered as asked.

    ``principals``, ``documents``: keep only these (None: all); a principal is matched by its ARN, its name (IAM
    user name or role session name), or its role's ARN or name. The node filter needs node names, which come
    later: ``finish`` applies it."""

    def __init__(self, principals: Optional[List[str]] = None, documents: Optional[List[str]] = None) -> None:
        self.principals = list(principals or [])
        self.documents = list(documents or [])
        self.sessions: Dict[str, Dict[str, Any]] = {}
        self.commands: Dict[str, Dict[str, Any]] = {}
        self.denied: List[Dict[str, Any]] = []
        self._resumes: Dict[str, List[Dict[str, Any]]] = {}
        self._terminations: Dict[str, Dict[str, Any]] = {}
        self.events_read = 0

    def _wanted(self, record: Dict[str, Any]) -> bool:
        if self.principals and not _matches_principal(record["principal"], self.principals):
            return False
        if self.documents and record.get("document") not in self.documents:
            return False
        return True

    def add(self, detail: Dict[str, Any]) -> None:
        """One CloudTrailEvent, parsed; the parts the audit needs are kept, the event itself is not."""
        self.events_read += 1
        event = reduce_event(detail)
        if event is None:
            return
        name = event["event"]
        if event["error_code"]:
            if name in ("StartSession", "SendCommand") and self._wanted(event):
                self.denied.append({
                    "event": name, "time": event["time"], "principal": event["principal"],
                    "node_ids": [event["node_id"]] if name == "StartSession" else event["node_ids"],
                    "document": event.get("document"), "error_code": event["error_code"],
                    "error_message": event["error_message"]})
            return
        if name == "StartSession":
            if event["session_id"] and self._wanted(event):
                self.sessions[event["session_id"]] = {
                    "session_id": event["session_id"],
                    "principal": event["principal"],
                    "region": event["region"],
                    "node": {"id": event["node_id"], "name": None},
                    "document": event["document"],
                    "parameters": event["parameters"],
                    "forwarding": forwarding(event["document"], event["parameters"]),
                    "reason": event["reason"],
                    "start_time": event["time"],
                    "end_time": None,
                    "status": None,
                    "ended": "unknown",
                    "terminated_by": None,
                    "resumed": [],
                    "run_as": None,
                    "transcript": None,
                }
        elif name == "ResumeSession" and event["session_id"]:
            self._resumes.setdefault(event["session_id"], []).append(
                {"time": event["time"], "principal": event["principal"]})
        elif name == "TerminateSession" and event["session_id"]:
            earlier = self._terminations.get(event["session_id"])
            if earlier is None or (event["time"] or "") < (earlier["time"] or ""):
                self._terminations[event["session_id"]] = {"time": event["time"], "principal": event["principal"]}
        elif name == "SendCommand" and event["command_id"] and self._wanted(event):
            self.commands[event["command_id"]] = {
                "command_id": event["command_id"],
                "principal": event["principal"],
                "region": event["region"],
                "document": event["document"],
                "requested": event["time"],
                "node_ids": event["node_ids"],
                "targets": event["targets"],
                "comment": event["comment"],
                "commands": None,
                "parameters": None,
                "status": None,
            }

    def finish(self, history: Dict[str, Dict[str, Any]], names: Dict[str, Optional[str]],
               command_details: Dict[str, Dict[str, Any]], nodes: Optional[List[str]] = None) -> Dict[str, Any]:
        """The joined records, newest first.

        ``history``: DescribeSessions entries by session id (status, end and transcript); ``names``: node Name tags
        by id; ``command_details``: ListCommands entries by command id; ``nodes``: keep only the sessions and
        commands that reached one of these nodes (id or Name)."""
        sessions = []
        for session_id, session in self.sessions.items():
            session["resumed"] = self._resumes.get(session_id, [])
            session["node"]["name"] = names.get(session["node"]["id"])
            apply_ending(session, self._terminations.get(session_id), history.get(session_id))
            if nodes and not {session["node"]["id"], session["node"]["name"]} & set(nodes):
                continue
            sessions.append(session)
        commands = []
        for command_id, command in self.commands.items():
            detail = command_details.get(command_id)
            if detail:
                parameters = detail.get("Parameters") or {}
                command["parameters"] = parameters
                command["commands"] = list(parameters.get("commands") or [])
                command["status"] = detail.get("Status")
                if not command["node_ids"]:
                    command["node_ids"] = list(detail.get("_node_ids") or [])
            command["nodes"] = [{"id": node, "name": names.get(node)} for node in command["node_ids"]]
            if nodes and not {n for node in command["nodes"] for n in (node["id"], node["name"])} & set(nodes):
                continue
            commands.append(command)
        sessions.sort(key=lambda s: s["start_time"] or "", reverse=True)
        commands.sort(key=lambda c: c["requested"] or "", reverse=True)
        self.denied.sort(key=lambda d: d["time"] or "", reverse=True)
        denied = self.denied
        if nodes:
            denied = [d for d in denied if set(d["node_ids"]) & set(nodes)
                      or {names.get(n) for n in d["node_ids"]} & set(nodes)]
        return {"sessions": sessions, "commands": commands, "denied": denied}


def apply_ending(session: Dict[str, Any], termination: Optional[Dict[str, Any]],
                 history: Optional[Dict[str, Any]]) -> None:
    """How the session ended, from its TerminateSession event (who ended it) and its DescribeSessions entry
    (status, end, details): ``terminated`` (TerminateSession: by its owner when the client closed it, else by
    whoever called it), ``timed_out`` (idle timeout or maximum duration), ``failed``, ``ended`` (ended without a
    TerminateSession in the range), ``open`` (still active), or ``unknown`` (no longer in the 30-day session
    history and no TerminateSession in the range)."""
    status = (history or {}).get("Status")
    details = str((history or {}).get("Details") or "").lower()
    session["status"] = status
    end = (history or {}).get("EndDate")
    if termination is not None:
        session["ended"] = "terminated"
        session["terminated_by"] = termination["principal"]
        session["end_time"] = iso(end) or termination["time"]
    elif status in ACTIVE_STATUSES:
        session["ended"] = "open"
    elif status == "Failed":
        session["ended"] = "failed"
        session["end_time"] = iso(end)
    elif status:
        session["ended"] = "timed_out" if ("timeout" in details or "duration" in details) else "ended"
        session["end_time"] = iso(end)
    if history is not None and history.get("OutputUrl"):
        session["transcript"] = transcript_from_output(history["OutputUrl"])


def transcript_from_output(output_url: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Where a session's transcript is, from its DescribeSessions OutputUrl: the S3 object and the CloudWatch Logs
    group and stream."""
    out: Dict[str, Any] = {"s3_bucket": None, "s3_key": None, "log_group": None, "log_stream": None,
                           "source": "session history"}
    s3 = output_url.get("S3OutputUrl") or ""
    if s3:
        parsed = urlparse(s3)
        host, path = parsed.netloc, unquote(parsed.path.lstrip("/"))
        if ".s3" in host and not host.startswith("s3."):
            out["s3_bucket"], out["s3_key"] = host.split(".s3", 1)[0], path
        elif "/" in path:
            out["s3_bucket"], out["s3_key"] = path.split("/", 1)
    logs = output_url.get("CloudWatchOutputUrl") or ""
    if logs:
        group = re.search(r"group=([^;&]+)", logs)
        stream = re.search(r"stream=([^;&]+)", logs)
        out["log_group"] = unquote(group.group(1)) if group else None
        out["log_stream"] = unquote(stream.group(1)) if stream else None
    if not any(out[k] for k in ("s3_bucket", "log_group")):
        return None
    return out


def transcript_from_preferences(preferences: Dict[str, Any], session_id: str, document: str) -> Optional[Dict[str, Any]]:
    """Where the transcript of a session would be under the preferences document's inputs (its S3 bucket and key
    prefix, its log group; the stream is the session id), for sessions the history no longer shows. None for port
    sessions, which have no transcript, and when logging is off."""
    if document in PORT_DOCUMENTS:
        return None
    bucket = preferences.get("s3BucketName") or None
    group = preferences.get("cloudWatchLogGroupName") or None
    if not bucket and not group:
        return None
    prefix = str(preferences.get("s3KeyPrefix") or "").strip("/")
    key = f"{prefix}/{session_id}.log" if prefix else f"{session_id}.log"
    return {"s3_bucket": bucket, "s3_key": key if bucket else None, "log_group": group,
            "log_stream": session_id if group else None, "source": "preferences"}


def run_as_user(preferences: Dict[str, Any], tags: Optional[Dict[str, str]], document: str) -> Optional[str]:
    """The OS user a shell session runs as under the preferences and the principal's tags (its ``SSMSessionRunAs``
    tag, else the default user), ``ssm-user`` when Run As is off; None for port sessions and when it cannot be
    told (Run As on, tags not readable)."""
    if document in PORT_DOCUMENTS:
        return None
    if str(preferences.get("runAsEnabled", False)).lower() != "true":
        return "ssm-user"
    if tags is not None and tags.get("SSMSessionRunAs"):
        return tags["SSMSessionRunAs"]
    if tags is None:
        return None
    return preferences.get("runAsDefaultUser") or None
