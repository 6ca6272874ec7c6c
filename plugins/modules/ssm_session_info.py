#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_session_info
version_added: 0.1.0
short_description: List Session Manager sessions, active and past
description:
  - Lists the Session Manager sessions of an account and region with C(DescribeSessions). For each one it
    tells who opened it (its owner), to which node, with which document, when it started and ended, its status
    and its reason.
  - Active sessions are those still C(Connecting), C(Connected), C(Disconnected) or C(Terminating); the history
    holds the ended ones (C(Terminated), C(Failed)) for 30 days.
  - Filters are those of C(DescribeSessions), applied by AWS, plus O(document_name), applied here.
  - This module changes nothing. To end sessions, use M(bastionless.ssm.ssm_session).
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  state:
    description:
      - V(active) lists the sessions still open, V(history) the ended ones, V(all) both.
    type: str
    choices: [active, history, all]
    default: all
  session_id:
    description:
      - Only the session with this ID.
    type: str
  target:
    description:
      - Only the sessions to this managed node (C(i-...) or C(mi-...)).
    type: str
  owner:
    description:
      - Only the sessions of this owner, the ARN of the IAM user or role session that started them, as
        RV(sessions[].owner) shows it (for example C(arn:aws:sts::123456789012:assumed-role/Operators/alice)).
    type: str
  status:
    description:
      - Only the sessions in this status.
    type: str
    choices: [Connected, Connecting, Disconnected, Terminated, Terminating, Failed]
  invoked_after:
    description:
      - Only the sessions that started at or after this time, in ISO 8601 (V(2025-01-31T08:00:00Z),
        V(2025-01-31T09:00:00+01:00) or V(2025-01-31)). A time without a zone is UTC.
    type: str
  invoked_before:
    description:
      - Only the sessions that started before this time, in the same forms as O(invoked_after).
    type: str
  document_name:
    description:
      - Only the sessions that used this document, for example C(AWS-StartPortForwardingSession) or
        C(SSM-SessionManagerRunShell) (shell sessions). AWS has no such filter; it is applied to what AWS
        returns.
    type: str
  max_results:
    description:
      - Return at most this many sessions per state, newest first. By default, all of them.
    type: int
attributes:
  check_mode:
    description: The module only reads; it runs the same in check mode.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Needs C(ssm:DescribeSessions).
  - In a session's RV(sessions[].session_id), the part before the last dash is the IAM user or role session
    name of the owner.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: List the sessions open right now
  bastionless.ssm.ssm_session_info:
    state: active
  register: __open

- name: Show who is connected to what
  ansible.builtin.debug:
    msg: "{{ __open.sessions | map(attribute='owner') | zip(__open.sessions | map(attribute='target')) }}"

- name: List the port forwarding sessions of the last 24 hours
  bastionless.ssm.ssm_session_info:
    state: all
    document_name: AWS-StartPortForwardingSession
    invoked_after: "{{ '%Y-%m-%dT%H:%M:%SZ' | strftime(now(utc=true).timestamp() - 86400, utc=true) }}"
  register: __forwards

- name: List the ended sessions on one node
  bastionless.ssm.ssm_session_info:
    state: history
    target: "{{ groups['ssm_nodes'] | first }}"
    max_results: 20
"""

RETURN = r"""
sessions:
  description: The sessions found, newest first (active ones before ended ones with O(state=all)).
  returned: always
  type: list
  elements: dict
  contains:
    session_id:
      description: The session's ID.
      type: str
      sample: alice-0a1b2c3d4e5f67890
    state:
      description: V(active) or V(history), the list the session was found in.
      type: str
      sample: history
    status:
      description: C(Connecting), C(Connected), C(Disconnected), C(Terminating), C(Terminated) or C(Failed).
      type: str
      sample: Terminated
    owner:
      description: The ARN of whoever started it.
      type: str
      sample: arn:aws:iam::123456789012:user/alice
    target:
      description: The managed node.
      type: str
      sample: i-0123456789abcdef0
    document_name:
      description: The session document; C(SSM-SessionManagerRunShell) for a shell.
      type: str
      sample: AWS-StartPortForwardingSessionToRemoteHost
    start_date:
      description: When it started (ISO 8601).
      type: str
      sample: "2025-01-31T08:00:00+00:00"
    end_date:
      description: When it ended (ISO 8601); null while it is active.
      type: str
      sample: "2025-01-31T08:12:00+00:00"
    reason:
      description: The reason given when it was started, or an empty string.
      type: str
      sample: database migration 42
    details:
      description: What Session Manager says about it, for example why it failed.
      type: str
      sample: ""
    output_url:
      description: Where its transcript is, when session logging is on.
      type: dict
      sample: {"s3_output_url": "https://s3.amazonaws.com/my-bucket/sessions/alice-0a1b2c3d4e5f67890.log",
               "cloud_watch_output_url": ""}
    max_session_duration:
      description: The longest the session may last, in minutes, when the preferences set one.
      type: str
      sample: "60"
    access_type:
      description: C(Standard) or C(JustInTime).
      type: str
      sample: Standard
"""

from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import describe_sessions
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import normalise_session
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import parse_time
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import session_filters

STATES = {"active": ["Active"], "history": ["History"], "all": ["Active", "History"]}


def validate(params: Dict[str, Any]) -> Optional[str]:
    """The first problem with the input, as a message naming the option and the fix; None when all is well."""
    for option in ("invoked_after", "invoked_before"):
        if params.get(option):
            try:
                parse_time(params[option])
            except ValueError:
                return (
                    f"{option} must be an ISO 8601 date or time such as 2025-01-31T08:00:00Z or 2025-01-31, "
                    f"not {params[option]!r}."
                )
    if params.get("max_results") is not None and params["max_results"] < 1:
        return f"max_results must be 1 or more, not {params['max_results']}."
    return None


# --- the module ------------------------------------------------------------------------------------------


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    problem = validate(params)
    if problem:
        module.fail_json(msg=problem)
    client = module.client("ssm")
    filters = session_filters(params)
    sessions: List[Dict[str, Any]] = []
    for state in STATES[params["state"]]:
        found = describe_sessions(client, state, filters, params["max_results"], params["document_name"])
        sessions.extend(normalise_session(s, state.lower()) for s in found)
    module.exit_json(changed=False, sessions=sessions)


def main() -> None:
    argument_spec = dict(
        state=dict(type="str", choices=["active", "history", "all"], default="all"),
        session_id=dict(type="str"),
        target=dict(type="str"),
        owner=dict(type="str"),
        status=dict(type="str",
                    choices=["Connected", "Connecting", "Disconnected", "Terminated", "Terminating", "Failed"]),
        invoked_after=dict(type="str"),
        invoked_before=dict(type="str"),
        document_name=dict(type="str"),
        max_results=dict(type="int"),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
