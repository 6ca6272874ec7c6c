#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_session
version_added: 0.1.0
short_description: End Session Manager sessions
description:
  - Ends Session Manager sessions with C(TerminateSession), chosen by ID, or all the active sessions to a node
    or of an owner. The client side of each session (the C(session-manager-plugin), a shell, a tunnel, an
    C(amazon.aws.aws_ssm) connection) is disconnected, and the agent on the node stops what the session ran.
  - A session that has already ended is left alone, so the module is idempotent.
  - O(wait) waits until the sessions have left the active list, and returns them as the history shows them.
  - To list sessions without changing anything, use M(bastionless.ssm.ssm_session_info).
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  state:
    description:
      - V(absent) ends the sessions. It is the only state; starting sessions is for the connection plugin,
        M(bastionless.ssm.ssm_tunnel) or the AWS CLI.
    type: str
    choices: [absent]
    default: absent
  session_ids:
    description:
      - The sessions to end, by ID.
      - IDs that are not found at all are returned in RV(not_found) and change nothing.
    type: list
    elements: str
  target:
    description:
      - End every active session to this managed node (with O(owner), only that owner's).
    type: str
  owner:
    description:
      - End every active session of this owner, the ARN that M(bastionless.ssm.ssm_session_info) shows in
        RV(bastionless.ssm.ssm_session_info#module:sessions[].owner) (with O(target), only those to that node).
    type: str
  wait_timeout:
    default: 60
attributes:
  check_mode:
    description: Finds the sessions and returns them in RV(terminated) and RV(sessions) without ending them.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Needs C(ssm:DescribeSessions) and C(ssm:TerminateSession). IAM policies often let operators end only their
    own sessions (a C(ssm:resourceTag/aws:ssmmessages:session-id) condition on C(${aws:userid})).
extends_documentation_fragment:
  - bastionless.ssm.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Find the sessions open to the first lab node
  bastionless.ssm.ssm_session_info:
    state: active
    target: "{{ groups['ssm_nodes'] | first }}"
  register: __open

- name: End one of them by ID
  bastionless.ssm.ssm_session:
    session_ids:
      - "{{ __open.sessions[0].session_id }}"
  when: __open.sessions | length > 0

- name: End every session to the first lab node, for example before it is replaced
  bastionless.ssm.ssm_session:
    target: "{{ groups['ssm_nodes'] | first }}"
  register: __ended

- name: Show who was disconnected
  ansible.builtin.debug:
    msg: "{{ __ended.sessions | map(attribute='owner') | unique }}"
"""

RETURN = r"""
terminated:
  description: The IDs of the sessions ended (in check mode, those that would be).
  returned: always
  type: list
  elements: str
  sample: [alice-0a1b2c3d4e5f67890]
sessions:
  description:
    - The sessions in RV(terminated), as M(bastionless.ssm.ssm_session_info) returns them. With O(wait), as
      the history shows them once they ended; otherwise as they were before.
  returned: always
  type: list
  elements: dict
  sample: [{"session_id": "alice-0a1b2c3d4e5f67890", "status": "Terminated", "state": "history",
            "owner": "arn:aws:iam::123456789012:user/alice", "target": "i-0123456789abcdef0",
            "document_name": "SSM-SessionManagerRunShell", "start_date": "2025-01-31T08:00:00+00:00",
            "end_date": "2025-01-31T08:12:00+00:00", "reason": "", "details": "", "output_url": {}}]
already_ended:
  description: Of O(session_ids), those that had already ended (or were already being ended).
  returned: always
  type: list
  elements: str
  sample: []
not_found:
  description: Of O(session_ids), those found neither active nor in the history.
  returned: always
  type: list
  elements: str
  sample: []
"""

import time
from typing import Any
from typing import Dict
from typing import List

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import describe_sessions
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import normalise_session
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import session_filters
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import terminate_session


def find_by_ids(client, session_ids: List[str]) -> Dict[str, List]:
    """Sort the IDs into: sessions to end, IDs already ended (or ending), IDs not found."""
    found: Dict[str, List] = {"end": [], "already_ended": [], "not_found": []}
    for session_id in dict.fromkeys(session_ids):
        active = describe_sessions(client, "Active", [{"key": "SessionId", "value": session_id}])
        if active and active[0].get("Status") != "Terminating":
            found["end"].append(active[0])
        elif active or describe_sessions(client, "History", [{"key": "SessionId", "value": session_id}]):
            found["already_ended"].append(session_id)
        else:
            found["not_found"].append(session_id)
    return found


def find_by_filters(client, params: Dict[str, Any]) -> List[Dict[str, Any]]:
    active = describe_sessions(client, "Active", session_filters(params))
    return [s for s in active if s.get("Status") != "Terminating"]


def wait_ended(client, session_ids: List[str], timeout: int) -> List[str]:
    """Wait until none of the sessions is active any more; the IDs still active when the bound passed."""
    deadline = time.monotonic() + timeout
    pending = list(session_ids)
    while True:
        pending = [i for i in pending if describe_sessions(client, "Active", [{"key": "SessionId", "value": i}])]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(1)


def ended_sessions(client, session_ids: List[str]) -> List[Dict[str, Any]]:
    found = []
    for session_id in session_ids:
        history = describe_sessions(client, "History", [{"key": "SessionId", "value": session_id}])
        found.extend(normalise_session(s, "history") for s in history)
    return found


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    if params["wait_timeout"] < 0:
        module.fail_json(msg=f"wait_timeout must be 0 or more seconds, not {params['wait_timeout']}.")
    client = module.client("ssm")
    result: Dict[str, Any] = {"already_ended": [], "not_found": []}
    if params["session_ids"] is not None:
        found = find_by_ids(client, params["session_ids"])
        to_end = found["end"]
        result.update(already_ended=found["already_ended"], not_found=found["not_found"])
    else:
        to_end = find_by_filters(client, params)
    ids = [s["SessionId"] for s in to_end]
    result.update(changed=bool(ids), terminated=ids, sessions=[normalise_session(s, "active") for s in to_end])

    if not ids or module.check_mode:
        module.exit_json(**result)
    for session_id in ids:
        terminate_session(client, session_id)
    if params["wait"]:
        still = wait_ended(client, ids, params["wait_timeout"])
        if still:
            module.fail_json(
                msg=f"sessions still active {params['wait_timeout']} s after TerminateSession: {', '.join(still)}.",
                **result,
            )
        result["sessions"] = ended_sessions(client, ids)
    module.exit_json(**result)


def main() -> None:
    argument_spec = dict(
        state=dict(type="str", choices=["absent"], default="absent"),
        session_ids=dict(type="list", elements="str"),
        target=dict(type="str"),
        owner=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=60),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        required_one_of=[["session_ids", "target", "owner"]],
        mutually_exclusive=[["session_ids", "target"], ["session_ids", "owner"]],
        supports_check_mode=True,
    )
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
