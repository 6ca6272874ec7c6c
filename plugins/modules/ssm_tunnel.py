#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_tunnel
version_added: 0.1.0
short_description: Open and close Session Manager port forwarding tunnels from a playbook
description:
  - Opens a port forwarding session from a local port on the controller to a port on a managed node
    (C(AWS-StartPortForwardingSession)) or, through the node, to a host and port behind it, such as an RDS
    database or an ElastiCache cluster (C(AWS-StartPortForwardingSessionToRemoteHost)). Nothing listens on the
    node and no security group opens a port to the controller.
  - Runs on the controller, in a play on C(localhost) or with C(delegate_to) set to C(localhost). It calls
    C(StartSession), then carries the session detached, under a small supervisor that records the tunnel in
    O(state_dir), and returns once the local port accepts connections.
  - No C(session-manager-plugin) needed. With O(transport=native) (the default where the Python package
    C(websockets) is installed) the supervisor speaks Session Manager's data channel itself, resumes the session
    with C(ResumeSession) when the service drops its WebSocket, and carries many TCP connections at once over the
    one session (multiplexed, as current SSM Agents offer). O(transport=plugin) runs the C(session-manager-plugin)
    instead.
  - Picks a free local port when O(local_port) is not given, and returns it in RV(tunnel.local_port).
  - A tunnel never outlives its play by accident. Its supervisor ends it, the plugin and the session when the
    C(ansible-playbook) (or C(ansible)) process that opened it exits, however it exits, unless
    O(keep_after_play) says otherwise; and when O(max_lifetime) passes. O(state=absent) ends it earlier.
  - Idempotent. A live tunnel to the same node, document, remote host and port (and the same O(local_port) and
    O(name) when given) is returned unchanged.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  state:
    description:
      - V(present) opens the tunnel unless it is open already.
      - V(absent) closes the tunnels that O(name), O(local_port), O(session_id), O(target), O(remote_host) and
        O(remote_port) select (all of those given must match; at least one must be given).
    type: str
    choices: [present, absent]
    default: present
  target:
    description:
      - The managed node the session goes to (C(i-...) or C(mi-...)). Required with O(state=present).
    type: str
  remote_port:
    description:
      - The port to reach, on the node itself or, with O(remote_host), on that host. Required with
        O(state=present).
    type: int
  remote_host:
    description:
      - A host the node can reach (a name it resolves, or an address), for example an RDS endpoint. Selects
        C(AWS-StartPortForwardingSessionToRemoteHost); without it the tunnel ends on the node
        (C(AWS-StartPortForwardingSession)).
    type: str
  local_port:
    description:
      - The port on C(127.0.0.1) of the controller. By default a free one is picked.
      - The task fails when the port is already in use.
    type: int
  name:
    description:
      - A name for the tunnel, to find it again (O(state=absent)) without its port. A live tunnel of the same
        name to another destination is closed and replaced.
    type: str
  session_id:
    description:
      - With O(state=absent), the tunnel of this session.
    type: str
  reason:
    description:
      - The reason recorded with the session (C(StartSession Reason)); M(bastionless.ssm.ssm_session_info) shows
        it in the session history.
    type: str
  wait_timeout:
    description:
      - The most seconds to wait for the tunnel to open, from C(StartSession) to the local port accepting
        connections. The tunnel is closed and the task fails when they pass, also when the Systems Manager endpoint
        or the session's data channel stops answering.
      - C(StartSession) is waited for within it, in a process of its own; a session that the endpoint starts after
        the task gave up is ended as its answer arrives (up to 60 s later). The task's other AWS calls
        (C(TerminateSession), and the supervisor's C(ResumeSession)) end within 10 s each, their attempts and
        botocore's backoff included; an O(aws_config) with more attempts or longer timeouts gets only what fits.
    type: int
    default: 30
  max_lifetime:
    description:
      - Close the tunnel after this many seconds, whatever happens. By default there is no such bound.
    type: int
  keep_after_play:
    description:
      - Keep the tunnel open after the Ansible process that opened it exits, for example to use it from a shell.
        It then lasts until O(state=absent), O(max_lifetime), or the end of the session (Session Manager's idle
        timeout ends a tunnel that carries nothing, 20 minutes by default).
    type: bool
    default: false
  transport:
    description:
      - How the supervisor carries the session.
      - V(native) speaks Session Manager's data channel itself (the Python package C(websockets) on the
        controller; no binary). Connections share the session, multiplexed, with SSM Agents newer than 3.0.196.0,
        and go one at a time with older ones.
      - V(plugin) runs the C(session-manager-plugin) (see O(plugin)).
      - Unset, V(native) where C(websockets) can be imported by the module's Python, else V(plugin). When the
        chosen transport cannot run, the task fails naming what to install.
    type: str
    choices: [native, plugin]
  state_dir:
    description:
      - Where the tunnels are recorded (a JSON file and a log per tunnel, named after the local port). Created
        private to the user. The log of a closed tunnel stays until the port is used again, or for 7 days.
    type: path
    default: ~/.ansible/bastionless_ssm/tunnels
  _controller_pid:
    description:
      - Internal, set by the module's action plugin; do not set it. The process id of the Ansible process whose
        exit closes the tunnel (see O(keep_after_play)).
    type: int
  _controller_start:
    description:
      - Internal, set by the module's action plugin; do not set it. The start time of O(_controller_pid), so that
        another process that gets the same id later is not taken for it.
    type: int
  _native_client:
    description:
      - Internal, set by the module's action plugin; do not set it. The collection's directory that holds the
        native transport's port forwarder.
    type: path
attributes:
  check_mode:
    description:
      - Opens and closes nothing. Reports whether the tunnel would be opened (RV(tunnel.local_port) is then
        O(local_port), or null when one would be picked) or which tunnels would be closed.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
  action:
    description: An action plugin passes the controller's process ID to the module, for the watchdog.
    support: full
notes:
  - Needs C(ssm:StartSession) on the node and the document, and C(ssm:TerminateSession). Operators' policies
    often allow port forwarding to some nodes only (resource tags); see the operator_access role.
  - The readiness check opens one TCP connection through the tunnel and closes it at once; the service at the
    far end sees a connection that sends nothing.
  - The supervisor's events (why a tunnel closed, a destination port the node could not connect to) and, with
    O(transport=plugin), the plugin's output are in RV(tunnel.log).
  - On the controller, needs a POSIX system (Linux or macOS).
extends_documentation_fragment:
  - bastionless.ssm.session_manager_plugin
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Forward a free local port to port 22 of the first lab node
  bastionless.ssm.ssm_tunnel:
    target: "{{ groups['ssm_nodes'] | first }}"
    remote_port: 22
    name: node-ssh
  delegate_to: localhost
  run_once: true
  register: __ssh_tunnel

- name: Reach a database behind the node on local port 15432, for ten minutes at most
  bastionless.ssm.ssm_tunnel:
    target: "{{ groups['ssm_nodes'] | first }}"
    remote_host: 127.0.0.1  # on AWS: the RDS endpoint, for example mydb.abcdefghij.eu-west-1.rds.amazonaws.com
    remote_port: 5432
    local_port: 15432
    max_lifetime: 600
    reason: schema migration
  delegate_to: localhost
  run_once: true
  register: __db_tunnel

- name: Show where to connect
  ansible.builtin.debug:
    msg: "127.0.0.1:{{ __db_tunnel.tunnel.local_port }} (session {{ __db_tunnel.tunnel.session_id }})"

- name: Close the tunnels again (they would close when the play ends anyway)
  bastionless.ssm.ssm_tunnel:
    state: absent
    local_port: "{{ item }}"
  delegate_to: localhost
  run_once: true
  loop:
    - "{{ __ssh_tunnel.tunnel.local_port }}"
    - "{{ __db_tunnel.tunnel.local_port }}"
"""

RETURN = r"""
tunnel:
  description: The tunnel (predicted in check mode).
  returned: when O(state=present)
  type: dict
  contains:
    local_port:
      description: The port on the controller to connect to; null in check mode when it would be picked.
      type: int
      sample: 41231
    local_address:
      description: The address the local port listens on.
      type: str
      sample: 127.0.0.1
    target:
      description: The managed node.
      type: str
      sample: i-0123456789abcdef0
    document_name:
      description: C(AWS-StartPortForwardingSession) or C(AWS-StartPortForwardingSessionToRemoteHost).
      type: str
      sample: AWS-StartPortForwardingSessionToRemoteHost
    remote_host:
      description: The host behind the node, or an empty string.
      type: str
      sample: mydb.abcdefghij.eu-west-1.rds.amazonaws.com
    remote_port:
      description: The port at the far end.
      type: int
      sample: 5432
    name:
      description: O(name), or an empty string.
      type: str
      sample: ""
    session_id:
      description: The Session Manager session that carries the tunnel; null in check mode.
      type: str
      sample: alice-0a1b2c3d4e5f67890
    pid:
      description: The supervisor's process ID.
      type: int
      sample: 12345
    plugin_pid:
      description: The session-manager-plugin's process ID; null with O(transport=native).
      type: int
      sample: 12346
    transport:
      description: The transport that carries the tunnel (V(native) or V(plugin)); null in check mode.
      type: str
      sample: native
    controller_pid:
      description: The Ansible process whose exit closes the tunnel; null with O(keep_after_play).
      type: int
      sample: 12000
    started:
      description: When the tunnel was opened (ISO 8601).
      type: str
      sample: "2025-01-31T08:00:00+00:00"
    expires:
      description: When O(max_lifetime) closes it (ISO 8601), or null.
      type: str
      sample: "2025-01-31T08:10:00+00:00"
    keep_after_play:
      description: O(keep_after_play).
      type: bool
      sample: false
    reason:
      description: O(reason), or an empty string.
      type: str
      sample: schema migration
    log:
      description: The tunnel's log file.
      type: str
      sample: /home/alice/.ansible/bastionless_ssm/tunnels/tunnel-41231.log
stopped:
  description: The tunnels closed (in check mode, those that would be), with the keys of RV(tunnel).
  returned: when O(state=absent)
  type: list
  elements: dict
  sample: [{"local_port": 41231, "target": "i-0123456789abcdef0", "session_id": "alice-0a1b2c3d4e5f67890"}]
"""

from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

from ansible.module_utils.basic import env_fallback

from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bastionless.ssm.plugins.module_utils import _aws_bounds as bounds
from ansible_collections.bastionless.ssm.plugins.module_utils import _ssm_tunnel as tunnels
from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

PORT_RANGE = (1, 65535)
# The most seconds one TerminateSession or ResumeSession may take (the supervisor's calls, and a failed task's
# clean-up); an endpoint that does not answer within them is given up on.
CLOSE_CALL_SECONDS = 10
# How much longer than wait_timeout a StartSession the task gave up on is waited for, to end the session it starts.
LATE_START_SECONDS = 60


class AnsibleSSMTunnelError(AnsibleAWSError):
    pass


class SSMTunnelErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMTunnelError


# --- pure helpers ----------------------------------------------------------------------------------------


def validate(params: Dict[str, Any]) -> Optional[str]:
    """The first problem with the input, as a message naming the option and the fix; None when all is well."""
    low, high = PORT_RANGE
    for option in ("remote_port", "local_port"):
        if params.get(option) is not None and not low <= params[option] <= high:
            return f"{option} must be a TCP port from {low} to {high}, not {params[option]}."
    if params["state"] == "present":
        missing = [o for o in ("target", "remote_port") if params.get(o) in (None, "")]
        if missing:
            return f"state=present needs {' and '.join(missing)}: the node to go through and the port to reach."
        if params.get("session_id"):
            return "session_id selects a tunnel to close; it is only for state=absent."
    else:
        selectors = ("name", "local_port", "session_id", "target", "remote_host", "remote_port")
        if not any(params.get(o) not in (None, "") for o in selectors):
            return f"state=absent needs at least one of {', '.join(selectors)} to say which tunnels to close."
    if params.get("wait_timeout") is not None and params["wait_timeout"] < 1:
        return f"wait_timeout must be 1 second or more, not {params['wait_timeout']}."
    if params.get("max_lifetime") is not None and params["max_lifetime"] < 1:
        return f"max_lifetime must be 1 second or more, not {params['max_lifetime']}."
    return None


def controller_process(params: Dict[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """The Ansible process to watch and its start time, as the action plugin passes them (internal options
    _controller_pid and _controller_start); None for what is missing or not a positive number."""
    def number(name: str) -> Optional[int]:
        value = params.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    return number("_controller_pid"), number("_controller_start")


def new_record(params: Dict[str, Any], local_port: Optional[int], records: tunnels.Records,
               controller: Tuple[Optional[int], Optional[int]] = (None, None)) -> Dict[str, Any]:
    keep = params["keep_after_play"]
    record = tunnels.wanted_tunnel(params)
    record.update(
        local_port=local_port,
        local_address=tunnels.LOCAL_ADDRESS,
        session_id=None,
        pid=None,
        plugin_pid=None,
        controller_pid=None if keep else controller[0],
        controller_start=None if keep else controller[1],
        started=tunnels.iso_now(),
        expires=tunnels.iso_now(params["max_lifetime"]) if params.get("max_lifetime") else None,
        max_lifetime=params.get("max_lifetime"),
        keep_after_play=keep,
        reason=params.get("reason") or "",
        log=records.path(local_port, ".log") if local_port else None,
        transport=None,
    )
    return record


def choose_transport(params: Dict[str, Any]):
    """(transport, the native forwarder module or None, the plugin's path or None); TunnelError naming the fix."""
    option = params.get("transport")
    forward, native_problem = (None, "") if option == "plugin" else tunnels.load_native(params.get("_native_client"))
    found = tunnels.plugin_if_found(params.get("plugin")) if native_problem and option != "native" else None
    transport = tunnels.choose_transport(option, native_problem, found)
    if transport == "plugin":
        return transport, None, tunnels.find_plugin(params.get("plugin"))
    return transport, forward, None


# --- AWS calls -------------------------------------------------------------------------------------------


@SSMTunnelErrorHandler.common_error_handler("start session")
def start_session(client, target: str, document: str, parameters: Dict[str, Any], reason: str,
                  seconds: float) -> Dict[str, Any]:
    """StartSession's answer within ``seconds``, or bounds.Late. The call runs detached (bounds.call_detached) on a
    client of its own whose attempts read for ``seconds`` plus LATE_START_SECONDS (bounds.detached_aws_config), so a
    session it starts after the task gave up is ended as its answer arrives. No AWSRetry: botocore retries throttling
    within the wait, where AWSRetry's backoff on top of it would outlast it."""
    args: Dict[str, Any] = {"Target": target, "DocumentName": document, "Parameters": parameters}
    if reason:
        args["Reason"] = reason
    answer = bounds.call_detached(lambda: client.start_session(**args), seconds,
                                  lambda late: terminate_quietly(client, late.get("SessionId")))
    return {key: answer.get(key) for key in ("SessionId", "TokenValue", "StreamUrl")}


def terminate_quietly(client, session_id: Optional[str]) -> None:
    """End a session whatever state it is in; TerminateSession is idempotent on AWS."""
    if not session_id:
        return
    try:
        client.terminate_session(SessionId=session_id)
    except Exception:  # pylint: disable=broad-exception-caught
        pass


# --- the module ------------------------------------------------------------------------------------------


def ensure_present(module: AnsibleAWSModule, records: tunnels.Records) -> None:
    params = module.params
    wanted = tunnels.wanted_tunnel(params)
    controller = controller_process(params)
    with records.lock():
        existing = records.all()
        for record in existing:
            if record["live"] and tunnels.same_tunnel(record, wanted) and tunnels.port_accepts(record["local_port"]):
                module.exit_json(changed=False, tunnel=tunnels.public_record(record))
        replaced = [r for r in existing if r["live"] and wanted["name"] and r.get("name") == wanted["name"]]
        if params.get("local_port"):
            holder = [r for r in existing if r["live"] and r["local_port"] == params["local_port"] and r not in replaced]
            if holder:
                module.fail_json(msg=(
                    f"local_port {params['local_port']} is used by the tunnel to {holder[0]['target']} port "
                    f"{holder[0]['remote_port']}; choose another local_port, or close that tunnel first "
                    f"(state=absent, local_port={params['local_port']})."
                ))
            if not replaced and tunnels.port_accepts(params["local_port"]):
                module.fail_json(msg=(
                    f"local_port {params['local_port']} is in use on {tunnels.LOCAL_ADDRESS} by another program; "
                    "choose another local_port or leave it out to have a free one picked."
                ))
        if module.check_mode:
            predicted = new_record(params, params.get("local_port"), records, controller)
            module.exit_json(changed=True, tunnel=tunnels.public_record(predicted))
        if not params["keep_after_play"] and not controller[0]:
            module.fail_json(msg=(
                "ssm_tunnel needs its action plugin (bastionless.ssm.ssm_tunnel) to know which Ansible process to "
                "watch; run it as a task of ansible-playbook or ansible, or set keep_after_play: true."
            ))
        try:
            transport, forward, plugin = choose_transport(params)
        except tunnels.TunnelError as error:
            module.fail_json(msg=str(error))
        # The task waits for StartSession and the local port until the deadline (wait_timeout, from StartSession
        # on); every other AWS call ends within CLOSE_CALL_SECONDS (the ends of sessions, the supervisor's
        # ResumeSession). ``client`` is StartSession's, used only in its detached process (start_session).
        client = module.client("ssm", aws_config=bounds.detached_aws_config(params.get("aws_config"),
                                                                            params["wait_timeout"] + LATE_START_SECONDS))
        # for the supervisor, which is a fork: a client whose connections are its own
        closer = module.client("ssm", aws_config=bounds.bounded_aws_config(params.get("aws_config"),
                                                                           CLOSE_CALL_SECONDS))
        for record in replaced:
            tunnels.stop(record)
        for record in existing:
            if not record["live"]:  # its supervisor died without clearing up (killed, or the machine restarted)
                terminate_quietly(closer, record.get("session_id"))
                records.remove(record)
        records.prune_logs({r["local_port"] for r in existing if r["live"]})
        local_port = params.get("local_port") or tunnels.free_port()
        record = new_record(params, local_port, records, controller)
        parameters = tunnels.session_parameters(wanted["remote_port"], local_port, wanted["remote_host"])
        deadline = bounds.Deadline(params["wait_timeout"])
        try:
            response = start_session(client, wanted["target"], wanted["document_name"], parameters, record["reason"],
                                     deadline.left())
        except (bounds.Late, AnsibleAWSError) as error:
            if isinstance(error, AnsibleAWSError) and not bounds.is_timeout(error):
                raise
            module.fail_json(msg=bounds.slow_endpoint(f"StartSession to {wanted['target']} in {module.region}",
                                                      params["wait_timeout"], "wait_timeout", client.meta.endpoint_url)
                             + " A session it starts later all the same is ended as its answer arrives.")
        except RuntimeError as error:  # the call's process could not say (bounds.call_detached)
            module.fail_json(msg=f"StartSession to {wanted['target']} failed: {error}")
        record["session_id"] = response["SessionId"]
        record["transport"] = transport
        if transport == "native":
            launch = tunnels.native_launcher(
                forward, response, local_port,
                lambda: closer.resume_session(SessionId=response["SessionId"]).get("TokenValue"))
        else:
            record["plugin"] = plugin
            launch = tunnels.plugin_launcher(tunnels.plugin_argv(
                plugin, response, module.region, params.get("profile"), wanted["target"], wanted["document_name"],
                parameters, client.meta.endpoint_url))
        try:
            record = tunnels.start(record, launch, records,
                                   lambda session_id: closer.terminate_session(SessionId=session_id))
        except (tunnels.TunnelError, OSError) as error:
            terminate_quietly(closer, record["session_id"])
            module.fail_json(msg=f"could not start the tunnel: {error}")
    problem = tunnels.wait_ready(record, deadline.left(), params["wait_timeout"])
    if problem:
        if not tunnels.stop(record):  # the supervisor ends the session as it stops; killed, it could not
            terminate_quietly(closer, record["session_id"])
        module.fail_json(msg=problem, tunnel=tunnels.public_record(record))
    module.exit_json(changed=True, tunnel=tunnels.public_record(record))


def ensure_absent(module: AnsibleAWSModule, records: tunnels.Records) -> None:
    params = module.params
    keys = ("name", "local_port", "session_id", "target", "remote_host", "remote_port")
    selector = {key: params.get(key) for key in keys}
    with records.lock():
        chosen = [r for r in records.all() if tunnels.selects(r, selector)]
        live = [r for r in chosen if r["live"]]
        if module.check_mode:
            module.exit_json(changed=bool(live), stopped=[tunnels.public_record(r) for r in live])
        client = module.client("ssm", aws_config=bounds.bounded_aws_config(params.get("aws_config"),
                                                                           CLOSE_CALL_SECONDS)) if chosen else None
        for record in chosen:
            if record["live"] and not tunnels.stop(record):
                warn(f"the tunnel on local port {record['local_port']} did not stop in time and was killed.")
            # The supervisor ends the session; a supervisor that died uncleanly could not, so end it here too.
            terminate_quietly(client, record.get("session_id"))
            records.remove(record)
    module.exit_json(changed=bool(live), stopped=[tunnels.public_record(r) for r in live])


def main() -> None:
    argument_spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        target=dict(type="str"),
        remote_port=dict(type="int"),
        remote_host=dict(type="str"),
        local_port=dict(type="int"),
        name=dict(type="str"),
        session_id=dict(type="str"),
        reason=dict(type="str"),
        plugin=dict(type="path", fallback=(env_fallback, ["AWS_SESSION_MANAGER_PLUGIN"])),
        wait_timeout=dict(type="int", default=30),
        max_lifetime=dict(type="int"),
        keep_after_play=dict(type="bool", default=False),
        state_dir=dict(type="path", default="~/.ansible/bastionless_ssm/tunnels"),
        # Internal (as async_status's _async_dir): the action plugin sets them to the Ansible process whose exit
        # closes the tunnel, and its start time (against PID reuse).
        _controller_pid=dict(type="int"),
        _controller_start=dict(type="int"),
        _native_client=dict(type="path"),
        transport=dict(type="str", choices=["native", "plugin"]),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    problem = validate(module.params)
    if problem:
        module.fail_json(msg=problem)
    records = tunnels.Records(module.params["state_dir"])
    try:
        if module.params["state"] == "present":
            ensure_present(module, records)
        else:
            ensure_absent(module, records)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
