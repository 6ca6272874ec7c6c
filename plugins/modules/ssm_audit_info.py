#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_audit_info
version_added: 0.1.0
short_description: Who opened which Session Manager session, and who ran which command, from CloudTrail
description:
  - Reads CloudTrail's event history (C(LookupEvents), filtered by AWS to the events of C(ssm.amazonaws.com))
    for a time range, and joins each session's C(StartSession), C(ResumeSession) and C(TerminateSession) events
    into one record. The record holds who started the session (principal ARN, identity type, source
    address), the node (ID and C(Name) tag), the document and its parameters (the host and ports a port
    forwarding session reached), when it started and ended, how it ended, the Run As user, and where its
    transcript is.
  - Also lists the Run Command invocations (C(SendCommand)) of the range, with their targets and commands, and
    the calls that AWS refused (C(StartSession) or C(SendCommand) with an error such as C(AccessDeniedException)).
  - CloudTrail hides the parameters of C(SendCommand). The module reads the commands from Run Command's own
    history (C(ListCommands), 30 days). It reads how a session ended and its transcript location from the
    session history (C(DescribeSessions), 30 days). For older sessions, the transcript location comes from the
    preferences document as it is now.
  - The module reads the events, the session history and the command history page by page, and keeps only the
    joined records, so a large trail does not fill memory.
  - CloudTrail's event history goes back 90 days. When the range begins earlier, the module says so in a warning
    and in RV(history_covers_range).
  - This module changes nothing.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  start_time:
    description:
      - The beginning of the range. V(now), a duration ago (V(30m), V(12h), V(7d), V(2w)), or an ISO 8601 date
        or time (V(2025-01-31), V(2025-01-31T08:00:00Z)). A time without a zone is UTC.
    type: str
    default: 7d
  end_time:
    description:
      - The end of the range, in the same forms as O(start_time).
    type: str
    default: now
  principals:
    description:
      - Only the sessions, commands and refused calls of these principals. Each entry matches the caller's ARN,
        its name (the IAM user name, or the role session name of an assumed role), or the ARN or name of the
        role it assumed.
    type: list
    elements: str
  nodes:
    description:
      - Only the sessions, commands and refused calls that targeted one of these nodes, given by ID
        (C(i-...), C(mi-...)) or C(Name) tag.
    type: list
    elements: str
  documents:
    description:
      - Only the sessions and commands that used one of these documents, for example
        C(AWS-StartPortForwardingSessionToRemoteHost) or C(SSM-SessionManagerRunShell) (shell sessions).
    type: list
    elements: str
  include_commands:
    description:
      - List the Run Command invocations as well. With V(false), the module does not call C(ListCommands).
    type: bool
    default: true
attributes:
  check_mode:
    description: The module only reads; it runs the same in check mode.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Needs C(cloudtrail:LookupEvents), C(ssm:DescribeSessions), C(ssm:GetDocument) (the preferences document)
    and C(ec2:DescribeInstances) (node names). With O(include_commands=true), it also needs C(ssm:ListCommands)
    and C(ssm:ListCommandInvocations). When Run As is on, it reads the principals' tags with
    C(iam:ListUserTags) and C(iam:ListRoleTags). Without these two, RV(sessions[].run_as) is null.
  - C(LookupEvents) answers two requests a second per account and region. Throttled calls are retried.
  - CloudTrail's event history is regional. The module reads the region it is given.
  - A session is listed when its C(StartSession) event is in the range.
  - CloudTrail does not record the Run As user. The module derives it from the preferences and the principal's
    tags as they are now.
  - See the guide C(docs/audit.md) in the collection for the questions it answers and what CloudTrail records.
seealso:
  - module: bastionless.ssm.ssm_session_info
  - name: CloudTrail LookupEvents
    description: The API this module reads.
    link: https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_LookupEvents.html
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Who reached the node web-1 last week
  bastionless.ssm.ssm_audit_info:
    start_time: 7d
    nodes: [web-1]
    include_commands: false
  register: __web1

- name: Show who and when
  ansible.builtin.debug:
    msg: "{{ __web1.sessions | map(attribute='principal.arn') | zip(__web1.sessions | map(attribute='start_time')) }}"

- name: Who forwarded a port to a remote host in January
  bastionless.ssm.ssm_audit_info:
    start_time: "2025-01-01"
    end_time: "2025-02-01"
    documents: [AWS-StartPortForwardingSessionToRemoteHost]
  register: __forwards

- name: List the hosts and ports they reached
  ansible.builtin.debug:
    msg: "{{ __forwards.sessions | map(attribute='forwarding') | list }}"

- name: What alice ran and opened in the last day
  bastionless.ssm.ssm_audit_info:
    start_time: 24h
    principals: [alice]
  register: __alice
"""

RETURN = r"""
sessions:
  description: The sessions whose C(StartSession) is in the range, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    session_id:
      description: The session's ID.
      type: str
      sample: alice-0a1b2c3d4e5f67890
    principal:
      description: Who started it.
      type: dict
      contains:
        arn:
          description: The caller's ARN.
          type: str
          sample: arn:aws:iam::123456789012:user/alice
        type:
          description: The identity type CloudTrail records, such as C(IAMUser) or C(AssumedRole).
          type: str
          sample: IAMUser
        name:
          description: The IAM user name, or the role session name of an assumed role.
          type: str
          sample: alice
        role_arn:
          description: The role an assumed role session belongs to; null for an IAM user.
          type: str
          sample: arn:aws:iam::123456789012:role/Operators
        account_id:
          description: The caller's account.
          type: str
          sample: "123456789012"
        access_key_id:
          description: The access key that signed the call.
          type: str
          sample: AKIAIOSFODNN7EXAMPLE
        source_ip:
          description: The address the call came from.
          type: str
          sample: 198.51.100.7
        user_agent:
          description: The client that made the call.
          type: str
          sample: aws-cli/2.15.0
      sample: {}
    region:
      description: The region of the session.
      type: str
      sample: eu-west-1
    node:
      description: The managed node, its ID and its C(Name) tag (null when it has none or is not an EC2 instance).
      type: dict
      sample: {"id": "i-0123456789abcdef0", "name": "web-1"}
    document:
      description: The session document; C(SSM-SessionManagerRunShell) for a shell.
      type: str
      sample: AWS-StartPortForwardingSessionToRemoteHost
    parameters:
      description: The document's parameters as the caller gave them.
      type: dict
      sample: {"host": ["db.internal"], "portNumber": ["5432"], "localPortNumber": ["15432"]}
    forwarding:
      description:
        - Where a port session led. C(host) is the remote host, or C(localhost) for the node itself. C(port) is
          the port there and C(local_port) the port on the client (null when the client chose one).
        - Null for sessions that forward no port.
      type: dict
      sample: {"host": "db.internal", "port": "5432", "local_port": "15432"}
    reason:
      description: The reason the caller gave, if any.
      type: str
      sample: incident 4711
    start_time:
      description: When the session started (its C(StartSession) event), in UTC.
      type: str
      sample: "2025-01-31T08:00:00Z"
    end_time:
      description: When it ended, in UTC; null while it is open or when that is not known.
      type: str
      sample: "2025-01-31T08:42:10Z"
    status:
      description: Its status in the session history (C(Connected), C(Terminated), C(Failed), ...). Null when
        the history no longer holds it (after 30 days).
      type: str
      sample: Terminated
    ended:
      description:
        - How it ended. V(terminated) means C(TerminateSession) was called, see RV(sessions[].terminated_by);
          the client calls it when the user closes the session. V(timed_out) means the idle timeout or the
          maximum session duration ended it. V(failed) means it failed. V(ended) means it ended without a
          C(TerminateSession) in the range. V(open) means it is still active.
        - V(unknown) means neither the range nor the session history tells.
      type: str
      sample: terminated
    terminated_by:
      description: Who called C(TerminateSession) (same keys as RV(sessions[].principal)); null otherwise.
      type: dict
      sample: {}
    resumed:
      description: The C(ResumeSession) calls, each with its C(time) and C(principal).
      type: list
      elements: dict
      sample: []
    run_as:
      description: The OS user of a shell session, as the preferences and the principal's tags give it now. Null
        for port sessions and when it cannot be told.
      type: str
      sample: ssm-user
    transcript:
      description:
        - Where the session's transcript is. C(s3_bucket) and C(s3_key) give the S3 object, C(log_group) and
          C(log_stream) the CloudWatch Logs stream.
        - C(source) is V(session history), or V(preferences) when the location comes from the preferences as
          they are now.
        - Null when logging is off or for port sessions, which have no transcript.
      type: dict
      sample: {"s3_bucket": "acme-session-audit", "s3_key": "sessions/alice-0a1b2c3d4e5f67890.log",
               "log_group": "/bastionless/ssm/sessions", "log_stream": "alice-0a1b2c3d4e5f67890",
               "source": "session history"}
commands:
  description: The Run Command invocations whose C(SendCommand) is in the range, newest first. Empty with
    O(include_commands=false).
  returned: always
  type: list
  elements: dict
  contains:
    command_id:
      description: The command's ID.
      type: str
      sample: 0b9a1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d
    principal:
      description: Who sent it (as RV(sessions[].principal)).
      type: dict
      sample: {}
    document:
      description: The command document.
      type: str
      sample: AWS-RunShellScript
    requested:
      description: When it was sent, in UTC.
      type: str
      sample: "2025-01-31T08:05:00Z"
    nodes:
      description: The nodes it targeted, each with its C(id) and C(name).
      type: list
      elements: dict
      sample: [{"id": "i-0123456789abcdef0", "name": "web-1"}]
    targets:
      description: The tag or resource targets it was sent to, as C(key) and C(values).
      type: list
      elements: dict
      sample: [{"key": "tag:Role", "values": ["web"]}]
    commands:
      description: The commands it ran, from Run Command's history; null when that history no longer holds it.
      type: list
      elements: str
      sample: ["systemctl restart nginx"]
    parameters:
      description: All the document's parameters, from the same history.
      type: dict
      sample: {"commands": ["systemctl restart nginx"]}
    status:
      description: The command's status in that history.
      type: str
      sample: Success
    comment:
      description: The comment given with it.
      type: str
      sample: restart after the config change
denied:
  description: The C(StartSession) and C(SendCommand) calls in the range that AWS refused, newest first, each with
    C(event), C(time), C(principal), C(node_ids), C(document), C(error_code) and C(error_message).
  returned: always
  type: list
  elements: dict
  sample: []
start_time:
  description: The beginning of the range read, in UTC.
  returned: always
  type: str
  sample: "2025-01-24T08:00:00Z"
end_time:
  description: The end of the range read, in UTC.
  returned: always
  type: str
  sample: "2025-01-31T08:00:00Z"
history_covers_range:
  description: Whether CloudTrail's 90-day event history reaches back to O(start_time).
  returned: always
  type: bool
  sample: true
events_read:
  description: How many CloudTrail events were read.
  returned: always
  type: int
  sample: 128
"""

import datetime
import json
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.bastionless.ssm.plugins.module_utils._audit import AuditJoin
from ansible_collections.bastionless.ssm.plugins.module_utils._audit import PORT_DOCUMENTS
from ansible_collections.bastionless.ssm.plugins.module_utils._audit import history_gap
from ansible_collections.bastionless.ssm.plugins.module_utils._audit import iso
from ansible_collections.bastionless.ssm.plugins.module_utils._audit import parse_when
from ansible_collections.bastionless.ssm.plugins.module_utils._audit import run_as_user
from ansible_collections.bastionless.ssm.plugins.module_utils._audit import transcript_from_preferences
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import PAGE_SIZE
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import describe_sessions_page
from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
NAME_CHUNK = 200  # values per DescribeInstances filter


class AnsibleAuditError(AnsibleAWSError):
    pass


class AuditErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleAuditError


class OptionalErrorHandler(AWSErrorHandler):
    """Reads the audit can do without (the preferences, the principals' tags): a missing resource or a refusal
    gives None."""

    _CUSTOM_EXCEPTION = AnsibleAuditError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code(["InvalidDocument", "NoSuchEntity", "AccessDenied", "AccessDeniedException",
                                    "UnauthorizedOperation"])


# --- AWS calls, one each ---------------------------------------------------------------------------------


@AuditErrorHandler.common_error_handler("look up CloudTrail events")
@AWSRetry.jittered_backoff(retries=10)
def lookup_events_page(client, start: datetime.datetime, end: datetime.datetime, token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"StartTime": start, "EndTime": end, "MaxResults": 50,
                            "LookupAttributes": [{"AttributeKey": "EventSource",
                                                  "AttributeValue": "ssm.amazonaws.com"}]}
    if token:
        args["NextToken"] = token
    return client.lookup_events(**args)


@AuditErrorHandler.common_error_handler("describe instances")
@AWSRetry.jittered_backoff()
def describe_instances(client, ids: List[str]) -> List[Dict[str, Any]]:
    paginator = client.get_paginator("describe_instances")
    found = paginator.paginate(Filters=[{"Name": "instance-id", "Values": ids}]).build_full_result()
    return [i for r in found.get("Reservations") or [] for i in r.get("Instances") or []]


@AuditErrorHandler.common_error_handler("list commands")
@AWSRetry.jittered_backoff()
def list_commands_page(client, start: datetime.datetime, end: datetime.datetime, token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"MaxResults": 50, "Filters": [{"key": "InvokedAfter", "value": iso(start)},
                                                          {"key": "InvokedBefore", "value": iso(end)}]}
    if token:
        args["NextToken"] = token
    return client.list_commands(**args)


@AuditErrorHandler.common_error_handler("list command invocations")
@AWSRetry.jittered_backoff()
def command_nodes(client, command_id: str) -> List[str]:
    paginator = client.get_paginator("list_command_invocations")
    found = paginator.paginate(CommandId=command_id).build_full_result()
    return [i["InstanceId"] for i in found.get("CommandInvocations") or []]


@OptionalErrorHandler.list_error_handler("get the preferences document")
@AWSRetry.jittered_backoff()
def get_preferences(client) -> Optional[Dict[str, Any]]:
    return client.get_document(Name=PREFERENCES_DOCUMENT, DocumentFormat="JSON")


@OptionalErrorHandler.list_error_handler("list the principal's tags")
@AWSRetry.jittered_backoff()
def principal_tags(client, kind: str, name: str) -> Optional[List[Dict[str, str]]]:
    if kind == "role":
        return client.list_role_tags(RoleName=name).get("Tags") or []
    return client.list_user_tags(UserName=name).get("Tags") or []


# --- the module ------------------------------------------------------------------------------------------


def session_history(client, start: datetime.datetime, end: datetime.datetime, wanted: set) -> Dict[str, Dict]:
    """The DescribeSessions entries (active and ended) of the sessions in ``wanted`` that started in the range."""
    filters = [{"key": "InvokedAfter", "value": iso(start - datetime.timedelta(minutes=1))},
               {"key": "InvokedBefore", "value": iso(end + datetime.timedelta(minutes=1))}]
    found: Dict[str, Dict] = {}
    if not wanted:
        return found
    for state in ("Active", "History"):
        token = None
        while True:
            page = describe_sessions_page(client, state, filters, PAGE_SIZE, token)
            for session in page.get("Sessions") or []:
                if session.get("SessionId") in wanted:
                    found[session["SessionId"]] = session
            token = page.get("NextToken")
            if not token:
                break
    return found


def command_history(client, start: datetime.datetime, end: datetime.datetime, wanted: set) -> Dict[str, Dict]:
    """The ListCommands entries of the commands in ``wanted``, read page by page."""
    found: Dict[str, Dict] = {}
    token = None
    while wanted:
        page = list_commands_page(client, start, end, token)
        for command in page.get("Commands") or []:
            if command.get("CommandId") in wanted:
                found[command["CommandId"]] = command
        token = page.get("NextToken")
        if not token or len(found) == len(wanted):
            break
    return found


def node_names(client, ids: List[str]) -> Dict[str, Optional[str]]:
    """The Name tag of each EC2 instance among ``ids`` (managed instances, ``mi-``, have none here)."""
    names: Dict[str, Optional[str]] = {}
    ec2_ids = sorted({i for i in ids if i and i.startswith("i-")})
    for offset in range(0, len(ec2_ids), NAME_CHUNK):
        for instance in describe_instances(client, ec2_ids[offset:offset + NAME_CHUNK]):
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
            names[instance["InstanceId"]] = tags.get("Name")
    return names


def preferences_inputs(client) -> Dict[str, Any]:
    document = get_preferences(client)
    if not document:
        return {}
    try:
        content = json.loads(document.get("Content") or "{}")
    except ValueError:
        return {}
    inputs = content.get("inputs") if isinstance(content, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def fill_run_as(module, sessions: List[Dict[str, Any]], preferences: Dict[str, Any]) -> None:
    """Each shell session's Run As user; the principals' tags are read once each, and only when Run As is on."""
    run_as_on = str(preferences.get("runAsEnabled", False)).lower() == "true"
    iam = module.client("iam", retry_decorator=AWSRetry.jittered_backoff()) if run_as_on else None
    tags_of: Dict[str, Optional[Dict[str, str]]] = {}
    for session in sessions:
        tags = None
        if iam is not None and session["document"] not in PORT_DOCUMENTS:
            who = session["principal"]
            key = who.get("role_arn") or who.get("arn") or ""
            if key not in tags_of:
                kind, name = ("role", key.rsplit("/", 1)[-1]) if who.get("role_arn") else ("user", who.get("name"))
                listed = principal_tags(iam, kind, name) if name and who.get("type") in ("IAMUser",
                                                                                         "AssumedRole") else None
                tags_of[key] = None if listed is None else {t["Key"]: t["Value"] for t in listed}
            tags = tags_of[key]
        session["run_as"] = run_as_user(preferences, tags, session["document"])


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    try:
        start = parse_when(params["start_time"], now, "start_time")
        end = parse_when(params["end_time"], now, "end_time")
    except ValueError as error:
        module.fail_json(msg=str(error))
    if start > end:
        module.fail_json(msg=f"start_time ({iso(start)}) is after end_time ({iso(end)}); give the earlier time as "
                             "start_time.")
    gap = history_gap(start, now)
    if gap:
        warn(gap)

    join = AuditJoin(params["principals"], params["documents"])
    cloudtrail = module.client("cloudtrail")
    token = None
    while True:
        page = lookup_events_page(cloudtrail, start, end, token)
        for event in page.get("Events") or []:
            try:
                join.add(json.loads(event.get("CloudTrailEvent") or "{}"))
            except ValueError:
                continue
        token = page.get("NextToken")
        if not token:
            break

    ssm = module.client("ssm")
    history = session_history(ssm, start, end, set(join.sessions))
    details: Dict[str, Dict[str, Any]] = {}
    if params["include_commands"] and join.commands:
        details = command_history(ssm, start - datetime.timedelta(minutes=1), end + datetime.timedelta(minutes=1),
                                  set(join.commands))
        for command_id, command in join.commands.items():
            if not command["node_ids"]:
                details.setdefault(command_id, {})["_node_ids"] = command_nodes(ssm, command_id)
    if not params["include_commands"]:
        join.commands = {}
    ids = [s["node"]["id"] for s in join.sessions.values()]
    ids += [n for c in join.commands.values() for n in c["node_ids"]]
    ids += [n for d in details.values() for n in d.get("_node_ids") or []]
    ids += [n for d in join.denied for n in d["node_ids"]]
    names = node_names(module.client("ec2"), ids) if ids else {}
    result = join.finish(history, names, details, params["nodes"])

    preferences = preferences_inputs(ssm) if result["sessions"] else {}
    for session in result["sessions"]:
        if session["transcript"] is None and session["status"] is None:
            session["transcript"] = transcript_from_preferences(preferences, session["session_id"],
                                                                session["document"])
    fill_run_as(module, result["sessions"], preferences)
    module.exit_json(changed=False, start_time=iso(start), end_time=iso(end), history_covers_range=gap is None,
                     events_read=join.events_read, **result)


def main() -> None:
    argument_spec = dict(
        start_time=dict(type="str", default="7d"),
        end_time=dict(type="str", default="now"),
        principals=dict(type="list", elements="str"),
        nodes=dict(type="list", elements="str"),
        documents=dict(type="list", elements="str"),
        include_commands=dict(type="bool", default=True),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
