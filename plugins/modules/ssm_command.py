#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_command
version_added: 0.1.0
short_description: Run a shell script on many managed nodes at once with Run Command
description:
  - Sends a C(AWS-RunShellScript) (or C(AWS-RunPowerShellScript)) command to managed nodes with Run Command
    (C(SendCommand)), waits for it with a bound, and returns each node's status, exit code, standard output and
    standard error.
  - The fan-out runs in Systems Manager, not in Ansible's forks; one task on the controller reaches a fleet of
    thousands by tag. O(max_concurrency) and O(max_errors) are Run Command's own rate and error controls.
  - Nodes need only the SSM Agent and to be Online; no session, no S3 transfer bucket and no Python on the node.
  - Results come from C(ListCommandInvocations) with details, 50 nodes a call; C(GetCommandInvocation) is called
    only for the nodes whose combined output is longer than the 2500 characters the list shows. So 1000 nodes
    with short output cost 20 calls, not 1000.
  - O(wait) waits until the command has finished on every node and returns each node's result; with
    O(wait=false) only the RV(command_id) is returned. When O(wait_timeout) passes, the task fails with the
    results so far and RV(command_id); the command goes on running in Systems Manager.
  - Each AWS call of the task (C(SendCommand), each poll, the results) ends within O(wait_timeout), but within 5 to
    30 s, its attempts and botocore's backoff included; an O(aws_config) with more attempts or longer timeouts gets
    only what fits. A Systems Manager endpoint that stops answering fails the task, naming the call and
    O(wait_timeout), instead of holding it for minutes.
  - Run Command is not idempotent; a command that is sent reports C(changed). Check mode sends nothing and
    lists the nodes the command would go to.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  document_name:
    description:
      - The Run Command document.
      - V(AWS-RunPowerShellScript) is for Windows nodes.
    type: str
    choices: [AWS-RunShellScript, AWS-RunPowerShellScript]
    default: AWS-RunShellScript
  commands:
    description:
      - The lines of the script, run in order by one shell (C(sh) for V(AWS-RunShellScript)) as root.
      - The node's exit code is the script's; a failing line does not stop the script unless it says so
        (C(set -e)).
    type: list
    elements: str
    required: true
  instance_ids:
    description:
      - The managed nodes to run on, by ID (C(i-...) for EC2 instances, C(mi-...) for hybrid nodes), at most 50
        (a C(SendCommand) limit). For more, target them by tag with O(targets).
      - Each node must be registered with Systems Manager in the region, or AWS rejects the whole command
        (C(InvalidInstanceId)).
    type: list
    elements: str
  targets:
    description:
      - The managed nodes to run on, by tag or ID, in C(SendCommand)'s C(Targets) syntax. Entries are
        combined with AND; the values of one entry with OR. At most 5 entries of 50 values each.
      - Systems Manager resolves them when the command starts, so the whole fleet gets one command, whatever its
        size.
    type: list
    elements: dict
    suboptions:
      key:
        description:
          - V(tag:<name>) for the value of a tag, V(tag-key) for nodes that have a tag whatever its value,
            V(InstanceIds) for IDs, or V(resource-groups:Name) for the nodes of a resource group.
        type: str
        required: true
        aliases: [Key]
      values:
        description:
          - The tag values, tag keys, IDs or group names.
        type: list
        elements: str
        required: true
        aliases: [Values]
  max_concurrency:
    description:
      - How many nodes run the command at the same time, as a number (V("50")) or a share of the targets
        (V("10%")). AWS's default is 50.
    type: str
  max_errors:
    description:
      - How many nodes may fail (C(Failed) or C(ExecutionTimedOut)) before Run Command stops sending the
        command to more nodes, as a number (V("0")) or a share of the targets (V("5%")). The nodes that have
        not started then end as C(Cancelled). AWS's default is 0, so the first failure stops the rest.
      - Nodes already running when the limit is passed finish, so up to O(max_errors) + O(max_concurrency)
        nodes can fail.
    type: str
  execution_timeout:
    description:
      - Seconds the script may run on a node before the agent stops it (C(executionTimeout)), from 1 to 172800.
        The node then ends C(TimedOut) (C(ExecutionTimedOut)). AWS's default is 3600.
    type: int
  timeout:
    description:
      - The delivery timeout (C(TimeoutSeconds)), from 30 to 2592000 seconds; a node that is not Online in that
        time ends C(DeliveryTimedOut) without running anything. AWS's default is 3600.
    type: int
  working_directory:
    description:
      - The directory the script starts in, on the node.
    type: str
  comment:
    description:
      - A comment shown with the command in the console and in C(ListCommands), up to 100 characters.
    type: str
  output_s3_bucket:
    description:
      - An S3 bucket the nodes write their full standard output and error to, as
        C(<output_s3_key_prefix>/<command-id>/<instance-id>/awsrunShellScript/0.awsrunShellScript/stdout) and
        C(.../stderr). The URLs are returned per node.
      - The nodes' instance role needs C(s3:PutObject) on it.
      - The module checks that the bucket exists (C(HeadBucket)) before it sends the command, also in check mode.
        Systems Manager does not, and a node's upload to a bucket that does not exist fails after the script has run.
    type: str
  output_s3_key_prefix:
    description:
      - The key prefix in O(output_s3_bucket).
    type: str
  cloudwatch_output:
    description:
      - Send the output to CloudWatch Logs as well, in streams
        C(<command-id>/<instance-id>/aws-runShellScript/stdout) and C(.../stderr).
      - The nodes' instance role needs C(logs:CreateLogStream) and C(logs:PutLogEvents).
    type: bool
    default: false
  cloudwatch_log_group:
    description:
      - The log group for O(cloudwatch_output). AWS's default is C(/aws/ssm/<document_name>).
      - Setting it turns O(cloudwatch_output) on.
    type: str
  wait_timeout:
    default: 600
  fail_on_error:
    description:
      - Fail the task when the command did not succeed on every target (a node C(Failed), C(TimedOut),
        C(DeliveryTimedOut), C(Cancelled) or C(Undeliverable)), as M(ansible.builtin.command) fails on a
        non-zero exit code. The results are returned either way.
      - With V(false), the task succeeds and RV(summary) says how many nodes failed.
    type: bool
    default: true
attributes:
  check_mode:
    description:
      - Sends nothing. Looks the targets up with C(DescribeInstanceInformation) and returns them in
        RV(targets), with their ping status, and reports C(changed).
      - Targets by V(resource-groups:...) cannot be looked up this way; RV(targets) is then null.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Needs C(ssm:SendCommand), C(ssm:ListCommands), C(ssm:ListCommandInvocations), C(ssm:GetCommandInvocation),
    and in check mode C(ssm:DescribeInstanceInformation).
  - AWS keeps the first 24000 characters of standard output and 8000 of standard error per node; longer output
    is cut there (RV(invocations[].stdout_truncated)). Set O(output_s3_bucket) to keep all of it.
  - The commands are sent to AWS and kept in the command's history; put no secrets in them.
extends_documentation_fragment:
  - bastionless.ssm.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Ask every node of the lab for its uptime, 50 at a time
  bastionless.ssm.ssm_command:
    commands:
      - uptime
    targets:
      - key: tag:ssm-lab
        values: [node]
    max_concurrency: "50"
  register: __uptime

- name: Show each node's answer
  ansible.builtin.debug:
    msg: "{{ __uptime.invocations | items2dict(key_name='instance_id', value_name='stdout') }}"

- name: List the nodes a command would reach, without sending it
  bastionless.ssm.ssm_command:
    commands:
      - systemctl restart myapp
    targets:
      - key: tag:ssm-lab
        values: [node]
  check_mode: true
  register: __would_run

- name: Run a script with a bound, tolerating up to 5% of failed nodes, keeping the full output in S3
  bastionless.ssm.ssm_command:
    commands:
      - set -e
      - cd /tmp
      - df -h /
    targets:
      - key: tag:ssm-lab
        values: [node]
    max_concurrency: "25%"
    max_errors: "5%"
    execution_timeout: 120
    comment: disk check
    output_s3_bucket: "{{ bastionless_transfer_bucket }}"
    output_s3_key_prefix: run-command
    wait_timeout: 300
    fail_on_error: false
  register: __disk

- name: List the nodes where it failed
  ansible.builtin.debug:
    msg: "{{ __disk.invocations | rejectattr('status', 'eq', 'Success') | map(attribute='instance_id') }}"
"""

RETURN = r"""
command_id:
  description: The ID of the command. Not returned in check mode.
  returned: when the command was sent
  type: str
  sample: 3d9f2c4e-1a2b-4c3d-9e8f-0123456789ab
command:
  description: The command as C(ListCommands) shows it after the wait (or as sent, without O(wait)).
  returned: when the command was sent
  type: dict
  contains:
    status:
      description: C(Pending), C(InProgress), C(Success), C(Failed), C(TimedOut), C(Cancelling) or C(Cancelled).
      type: str
      sample: Success
    status_details:
      description: The detailed status, for example C(Incomplete) when some nodes failed.
      type: str
      sample: Success
    target_count:
      description: How many nodes the command went to.
      type: int
      sample: 200
    completed_count:
      description: How many nodes have finished.
      type: int
      sample: 200
    error_count:
      description: How many nodes failed or timed out.
      type: int
      sample: 0
    delivery_timed_out_count:
      description: How many nodes were never reached.
      type: int
      sample: 0
    requested_date_time:
      description: When the command was sent (ISO 8601).
      type: str
      sample: "2025-01-01T12:00:00+00:00"
invocations:
  description:
    - One entry per target node, sorted by instance ID.
    - Empty without O(wait).
  returned: when the command was sent
  type: list
  elements: dict
  contains:
    instance_id:
      description: The node.
      type: str
      sample: i-0123456789abcdef0
    instance_name:
      description: The node's host name, as SSM knows it.
      type: str
      sample: ip-10-42-1-10.ec2.internal
    status:
      description: C(Success), C(Failed), C(TimedOut), C(Cancelled), or, while it runs, C(Pending), C(Delayed),
        C(InProgress).
      type: str
      sample: Success
    status_details:
      description: The detailed status, for example C(ExecutionTimedOut), C(DeliveryTimedOut) or C(Undeliverable).
      type: str
      sample: Success
    response_code:
      description: The script's exit code; C(-1) when it did not run or did not finish.
      type: int
      sample: 0
    stdout:
      description: The standard output, at most 24000 characters.
      type: str
      sample: " 12:00:00 up 3 days,  2:01,  0 users,  load average: 0.00, 0.01, 0.05\n"
    stderr:
      description: The standard error, at most 8000 characters.
      type: str
      sample: ""
    stdout_truncated:
      description: Whether the standard output reached AWS's 24000 characters and may have been cut there.
      type: bool
      sample: false
    stderr_truncated:
      description: Whether the standard error reached AWS's 8000 characters and may have been cut there.
      type: bool
      sample: false
    stdout_url:
      description: The S3 URL of the full standard output, with O(output_s3_bucket); else empty.
      type: str
      sample: https://s3.us-east-1.amazonaws.com/my-bucket/run-command/3d9f.../i-0123456789abcdef0/awsrunShellScript/0.awsrunShellScript/stdout
    stderr_url:
      description: The S3 URL of the full standard error, with O(output_s3_bucket) and some error output; else empty.
      type: str
      sample: ""
    execution_start:
      description: When the script started on the node (ISO 8601), if it did.
      type: str
      sample: "2025-01-01T12:00:01+00:00"
    execution_end:
      description: When it ended (ISO 8601), if it did.
      type: str
      sample: "2025-01-01T12:00:02+00:00"
summary:
  description: Counts over RV(invocations).
  returned: when the command was sent and waited for
  type: dict
  contains:
    total:
      description: Target nodes.
      type: int
      sample: 200
    success:
      description: Nodes where the script ran and exited 0.
      type: int
      sample: 197
    failed:
      description: Nodes that finished any other way (failed, timed out, never reached, cancelled).
      type: int
      sample: 3
    running:
      description: Nodes not finished yet (only after O(wait_timeout) passed).
      type: int
      sample: 0
    by_status:
      description: Nodes by RV(invocations[].status).
      type: dict
      sample: {"Success": 197, "Failed": 3}
    by_status_details:
      description: Nodes by RV(invocations[].status_details).
      type: dict
      sample: {"Success": 197, "Failed": 2, "DeliveryTimedOut": 1}
targets:
  description:
    - In check mode, the registered managed nodes the command would go to, with their ping status; nodes that
      are not C(Online) would end C(DeliveryTimedOut).
    - Null when the targets cannot be looked up (resource groups).
  returned: check mode
  type: list
  elements: dict
  sample: [{"instance_id": "i-0123456789abcdef0", "ping_status": "Online", "computer_name": "ip-10-42-1-10.ec2.internal",
            "platform_type": "Linux", "platform_name": "Amazon Linux", "resource_type": "EC2Instance"}]
target_count:
  description: In check mode, the length of RV(targets) (null when it is null).
  returned: check mode
  type: int
  sample: 200
"""

import re
import time
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.bastionless.ssm.plugins.module_utils import _aws_bounds as bounds
from ansible_collections.bastionless.ssm.plugins.module_utils._preflight_readers import read_instance_information
from ansible_collections.bastionless.ssm.plugins.module_utils._ssm_session import iso
from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

# Limits of SendCommand and of what AWS keeps of a node's output.
MAX_INSTANCE_IDS = 50
MAX_TARGETS = 5
MAX_TARGET_VALUES = 50
MAX_COMMENT = 100
LIST_OUTPUT_LIMIT = 2500
STDOUT_LIMIT = 24000
STDERR_LIMIT = 8000
ERROR_SEPARATOR = "----------ERROR-------"
EXECUTION_TIMEOUT_RANGE = (1, 172800)
DELIVERY_TIMEOUT_RANGE = (30, 2592000)
PAGE_SIZE = 50
# Each AWS call of the task ends within wait_timeout, but within this range (bounds.bounded_aws_config).
CALL_SECONDS = (5, 30)

CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
ERRORS = re.compile(r"^([1-9][0-9]*|0|[1-9][0-9]%|[0-9]%|100%)$")
INSTANCE_ID = re.compile(r"^(i-[0-9a-f]{8,17}|mi-[0-9a-f]{17})$")
TARGET_KEY = re.compile(r"^(InstanceIds|tag-key|tag:.+|resource-groups:Name|resource-groups:ResourceTypeFilters)$")

COMMAND_DONE = ("Success", "Failed", "TimedOut", "Cancelled")
INVOCATION_DONE = ("Success", "Failed", "TimedOut", "Cancelled")


class AnsibleSSMCommandError(AnsibleAWSError):
    pass


class SSMCommandErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMCommandError


# --- pure helpers ----------------------------------------------------------------------------------------


def validate(params: Dict[str, Any]) -> Optional[str]:
    """The first problem with the input, as a message naming the option and the fix; None when all is well."""
    if not params["commands"] or not any(line.strip() for line in params["commands"]):
        return "commands is empty: give at least one line of script."
    ids = params.get("instance_ids")
    if ids is not None:
        if not ids:
            return "instance_ids is empty: give at least one managed node ID, or use targets."
        if len(ids) > MAX_INSTANCE_IDS:
            return (
                f"instance_ids has {len(ids)} IDs; SendCommand takes at most {MAX_INSTANCE_IDS}. Target the fleet "
                "by tag with targets (key: tag:<name>), which has no such limit, or split the list."
            )
        bad = [i for i in ids if not INSTANCE_ID.match(i)]
        if bad:
            return f"instance_ids has values that are not managed node IDs (i-... or mi-...): {', '.join(bad)}."
    targets = params.get("targets")
    if targets is not None:
        if not targets:
            return "targets is empty: give at least one key and its values, or use instance_ids."
        if len(targets) > MAX_TARGETS:
            return f"targets has {len(targets)} entries; SendCommand takes at most {MAX_TARGETS}."
        for target in targets:
            if not TARGET_KEY.match(target["key"]):
                return (
                    f"targets key {target['key']!r} is not one Run Command knows: use tag:<name>, tag-key, "
                    "InstanceIds, resource-groups:Name or resource-groups:ResourceTypeFilters."
                )
            if not target["values"] or len(target["values"]) > MAX_TARGET_VALUES:
                return f"targets key {target['key']} needs 1 to {MAX_TARGET_VALUES} values, not {len(target['values'])}."
    if params.get("max_concurrency") is not None and not CONCURRENCY.match(params["max_concurrency"]):
        return (
            f"max_concurrency must be a number from 1 or a percentage from 1% to 100% (for example 50 or 10%), "
            f"not {params['max_concurrency']!r}."
        )
    if params.get("max_errors") is not None and not ERRORS.match(params["max_errors"]):
        return (
            f"max_errors must be a number from 0 or a percentage from 0% to 100% (for example 0 or 5%), "
            f"not {params['max_errors']!r}."
        )
    low, high = EXECUTION_TIMEOUT_RANGE
    if params.get("execution_timeout") is not None and not low <= params["execution_timeout"] <= high:
        return f"execution_timeout must be from {low} to {high} seconds, not {params['execution_timeout']}."
    low, high = DELIVERY_TIMEOUT_RANGE
    if params.get("timeout") is not None and not low <= params["timeout"] <= high:
        return f"timeout (the delivery timeout) must be from {low} to {high} seconds, not {params['timeout']}."
    if params.get("comment") is not None and len(params["comment"]) > MAX_COMMENT:
        return f"comment has {len(params['comment'])} characters; AWS takes at most {MAX_COMMENT}."
    if params.get("wait_timeout") is not None and params["wait_timeout"] < 0:
        return f"wait_timeout must be 0 or more seconds, not {params['wait_timeout']}."
    return None


def output_bucket_problem(bucket: str, code: str) -> Optional[str]:
    """The message for an output bucket HeadBucket says does not exist; None for any other answer (a bucket in
    another region, or one the caller may not read, still exists: the nodes' role is what writes to it)."""
    if code not in ("404", "NoSuchBucket", "NotFound"):
        return None
    return (f"output_s3_bucket: the bucket {bucket} does not exist, so the nodes could not upload their output to it; "
            "create it first, name an existing bucket, or leave output_s3_bucket unset. The command was not sent.")


def send_command_args(params: Dict[str, Any]) -> Dict[str, Any]:
    """The SendCommand arguments for the module's parameters (validated)."""
    parameters: Dict[str, List[str]] = {"commands": list(params["commands"])}
    if params.get("execution_timeout") is not None:
        parameters["executionTimeout"] = [str(params["execution_timeout"])]
    if params.get("working_directory"):
        parameters["workingDirectory"] = [params["working_directory"]]
    args: Dict[str, Any] = {"DocumentName": params["document_name"], "Parameters": parameters}
    if params.get("instance_ids"):
        args["InstanceIds"] = list(params["instance_ids"])
    else:
        args["Targets"] = [{"Key": t["key"], "Values": list(t["values"])} for t in params["targets"]]
    if params.get("max_concurrency") is not None:
        args["MaxConcurrency"] = params["max_concurrency"]
    if params.get("max_errors") is not None:
        args["MaxErrors"] = params["max_errors"]
    if params.get("timeout") is not None:
        args["TimeoutSeconds"] = params["timeout"]
    if params.get("comment"):
        args["Comment"] = params["comment"]
    if params.get("output_s3_bucket"):
        args["OutputS3BucketName"] = params["output_s3_bucket"]
        if params.get("output_s3_key_prefix"):
            args["OutputS3KeyPrefix"] = params["output_s3_key_prefix"]
    if params.get("cloudwatch_output") or params.get("cloudwatch_log_group"):
        cloudwatch: Dict[str, Any] = {"CloudWatchOutputEnabled": True}
        if params.get("cloudwatch_log_group"):
            cloudwatch["CloudWatchLogGroupName"] = params["cloudwatch_log_group"]
        args["CloudWatchOutputConfig"] = cloudwatch
    return args


def target_filters(params: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """DescribeInstanceInformation filters that select what the command's targets select; None when they
    cannot (resource groups)."""
    if params.get("instance_ids"):
        return [{"Key": "InstanceIds", "Values": list(params["instance_ids"])}]
    filters = []
    for target in params["targets"]:
        if target["key"].startswith("resource-groups:"):
            return None
        filters.append({"Key": target["key"], "Values": list(target["values"])})
    return filters


def split_output(output: str) -> Tuple[str, str]:
    """ListCommandInvocations' combined ``Output`` (stdout, then the error separator, then stderr) split."""
    marker = "\n" + ERROR_SEPARATOR + "\n"
    if marker in output:
        stdout, stderr = output.split(marker, 1)
        return stdout, stderr
    if output.startswith(ERROR_SEPARATOR + "\n"):
        return "", output[len(ERROR_SEPARATOR) + 1:]
    return output, ""


def needs_full_output(output: str) -> bool:
    """Whether the list's combined output may have been cut at its 2500 characters."""
    return len(output or "") >= LIST_OUTPUT_LIMIT


def invocation_result(row: Dict[str, Any], full: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One node's result from its ListCommandInvocations row (with details) and, when the list's output was
    cut, its GetCommandInvocation answer."""
    plugins = row.get("CommandPlugins") or [{}]
    plugin = plugins[0]
    if full is not None:
        stdout = full.get("StandardOutputContent") or ""
        stderr = full.get("StandardErrorContent") or ""
        stdout_truncated = len(stdout) >= STDOUT_LIMIT
        stderr_truncated = len(stderr) >= STDERR_LIMIT
    else:
        stdout, stderr = split_output(plugin.get("Output") or "")
        stdout_truncated = stderr_truncated = False
    response_code = plugin.get("ResponseCode")
    if full is not None and full.get("ResponseCode") is not None:
        response_code = full["ResponseCode"]
    return {
        "instance_id": row["InstanceId"],
        "instance_name": row.get("InstanceName") or "",
        "status": row.get("Status") or "",
        "status_details": row.get("StatusDetails") or "",
        "response_code": -1 if response_code is None else int(response_code),
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": stdout_truncated,
        "stderr_truncated": stderr_truncated,
        "stdout_url": row.get("StandardOutputUrl") or plugin.get("StandardOutputUrl") or "",
        "stderr_url": row.get("StandardErrorUrl") or plugin.get("StandardErrorUrl") or "",
        "execution_start": iso(plugin.get("ResponseStartDateTime")),
        "execution_end": iso(plugin.get("ResponseFinishDateTime")),
    }


def summarise(invocations: List[Dict[str, Any]]) -> Dict[str, Any]:
    by_status: Dict[str, int] = {}
    by_details: Dict[str, int] = {}
    for item in invocations:
        by_status[item["status"]] = by_status.get(item["status"], 0) + 1
        by_details[item["status_details"]] = by_details.get(item["status_details"], 0) + 1
    success = by_status.get("Success", 0)
    running = sum(n for status, n in by_status.items() if status not in INVOCATION_DONE)
    return {
        "total": len(invocations),
        "success": success,
        "failed": len(invocations) - success - running,
        "running": running,
        "by_status": by_status,
        "by_status_details": by_details,
    }


def command_result(command: Dict[str, Any]) -> Dict[str, Any]:
    """The command as returned: snake_case, dates in ISO 8601."""
    result = camel_dict_to_snake_dict(command)
    for key in ("requested_date_time", "expires_after"):
        if key in result:
            result[key] = iso(result[key])
    return result


def failure_message(command_id: str, summary: Dict[str, Any]) -> str:
    kinds = ", ".join(
        f"{details}: {n}" for details, n in sorted(summary["by_status_details"].items()) if details != "Success"
    )
    return (
        f"command {command_id} did not succeed on {summary['failed']} of {summary['total']} nodes ({kinds}); "
        "see invocations for each node's exit code and output, or set fail_on_error: false."
    )


def offline_sentence(ping_statuses: Dict[str, str]) -> str:
    """The sentence that names the nodes of a command still running whose agent is not Online (``ping_statuses``: the
    PingStatus of each node still running, "" for a node Systems Manager no longer lists); "" when all are Online."""
    offline = sorted((node, status or "not registered") for node, status in ping_statuses.items() if status != "Online")
    if not offline:
        return ""
    shown = ", ".join(f"{node} ({status})" for node, status in offline[:10])
    more = f" and {len(offline) - 10} more" if len(offline) > 10 else ""
    return (f" Not Online, so their agents have not taken it: {shown}{more}; run playbooks/preflight.yml "
            "(bastionless.ssm.ssm_preflight) on them for the cause and the fix.")


def next_interval(interval: float) -> float:
    return min(interval * 1.5, 10.0)


def call_seconds(wait_timeout: int) -> int:
    """The most seconds one AWS call of the task may take, its attempts included: wait_timeout, within CALL_SECONDS."""
    low, high = CALL_SECONDS
    return min(max(wait_timeout, low), high)


def unanswered_message(command_id: str, wait_timeout: int, endpoint: Optional[str]) -> str:
    """The failure of a wait whose polls the endpoint stopped answering."""
    where = f" {endpoint}" if endpoint else ""
    return (f"command {command_id} was sent, but the Systems Manager endpoint{where} did not answer ListCommands "
            f"within wait_timeout ({wait_timeout} s): it is slow or unreachable, and the command's state is unknown "
            "(it goes on running in Systems Manager). Check the network path to the endpoint (proxy, VPC endpoint) or "
            "raise wait_timeout, and follow the command by its command_id.")


# --- AWS calls -------------------------------------------------------------------------------------------
# On a client bounded by wait_timeout (bounds.bounded_aws_config): botocore's attempts retry throttling within the
# bound, where AWSRetry's backoff on top of them could hold the task for minutes.


def _error_code(error) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@SSMCommandErrorHandler.common_error_handler("send command")
def send_command(client, args: Dict[str, Any]) -> Dict[str, Any]:
    return client.send_command(**args)["Command"]


def head_bucket(s3, bucket: str) -> None:
    s3.head_bucket(Bucket=bucket)


def check_output_bucket(module: AnsibleAWSModule, bucket: str, seconds: int) -> None:
    """Fail, before anything is sent, when the output bucket does not exist."""
    try:
        head_bucket(module.client("s3", aws_config=bounds.bounded_aws_config(module.params.get("aws_config"), seconds)),
                    bucket)
    except botocore.exceptions.ClientError as e:
        problem = output_bucket_problem(bucket, _error_code(e))
        if problem:
            module.fail_json(msg=problem)
    except botocore.exceptions.BotoCoreError as e:
        module.fail_json_aws(e, msg=f"could not check that output_s3_bucket {bucket} exists")


@SSMCommandErrorHandler.common_error_handler("list commands")
def get_command(client, command_id: str) -> Optional[Dict[str, Any]]:
    """The command as ListCommands shows it; None while it does not show it yet (just after SendCommand: an empty
    list, or InvalidCommandId; the next poll asks again)."""
    try:
        commands = client.list_commands(CommandId=command_id)["Commands"]
    except botocore.exceptions.ClientError as e:
        if _error_code(e) == "InvalidCommandId":
            return None
        raise
    return commands[0] if commands else None


@SSMCommandErrorHandler.common_error_handler("list command invocations")
def list_invocations_page(client, command_id: str, token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"CommandId": command_id, "Details": True, "MaxResults": PAGE_SIZE}
    if token:
        args["NextToken"] = token
    return client.list_command_invocations(**args)


@SSMCommandErrorHandler.common_error_handler("get command invocation")
def get_invocation(client, command_id: str, instance_id: str) -> Optional[Dict[str, Any]]:
    """The node's full invocation; None when AWS does not show it (yet): the list's row is the result then."""
    try:
        return client.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except botocore.exceptions.ClientError as e:
        if _error_code(e) == "InvocationDoesNotExist":
            return None
        raise


@SSMCommandErrorHandler.common_error_handler("describe instance information")
def describe_instance_information_page(client, filters: List[Dict[str, Any]], token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"Filters": filters, "MaxResults": PAGE_SIZE}
    if token:
        args["NextToken"] = token
    return client.describe_instance_information(**args)


# --- the module ------------------------------------------------------------------------------------------


def list_invocations(client, command_id: str) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    token = None
    while True:
        page = list_invocations_page(client, command_id, token)
        rows.extend(page.get("CommandInvocations") or [])
        token = page.get("NextToken")
        if not token:
            return rows


def collect_results(client, command_id: str) -> List[Dict[str, Any]]:
    results = []
    for row in list_invocations(client, command_id):
        plugins = row.get("CommandPlugins") or [{}]
        full = None
        cut = needs_full_output(plugins[0].get("Output") or "")
        if cut:
            full = get_invocation(client, command_id, row["InstanceId"])
        result = invocation_result(row, full)
        if cut and full is None:  # AWS did not show the full invocation: the list's output may be cut
            result["stdout_truncated"] = True
        results.append(result)
    results.sort(key=lambda item: item["instance_id"])
    return results


def predict_targets(client, params: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    filters = target_filters(params)
    if filters is None:
        return None
    found: List[Dict[str, Any]] = []
    token = None
    while True:
        page = describe_instance_information_page(client, filters, token)
        for info in page.get("InstanceInformationList") or []:
            found.append({
                "instance_id": info["InstanceId"],
                "ping_status": info.get("PingStatus", ""),
                "computer_name": info.get("ComputerName", ""),
                "platform_type": info.get("PlatformType", ""),
                "platform_name": info.get("PlatformName", ""),
                "resource_type": info.get("ResourceType", ""),
            })
        token = page.get("NextToken")
        if not token:
            break
    found.sort(key=lambda item: item["instance_id"])
    return found


def ping_statuses(client, instance_ids: List[str]) -> Dict[str, str]:
    """The PingStatus of each node ("" when Systems Manager does not list it); {} when the lookup fails (the caller's
    message is then only less precise)."""
    try:
        rows = read_instance_information(client, instance_ids)
    except (AnsibleAWSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return {}  # read_instance_information's handler raises an AnsibleAWSError
    return {node: (rows.get(node) or {}).get("PingStatus", "") for node in instance_ids}


def check_mode(module: AnsibleAWSModule, client) -> None:
    params = module.params
    targets = predict_targets(client, params)
    if targets is None:
        warn("check mode cannot look up targets by resource group; targets is null.")
        module.exit_json(changed=True, targets=None, target_count=None)
    if params.get("instance_ids"):
        known = {t["instance_id"] for t in targets}
        unknown = [i for i in params["instance_ids"] if i not in known]
        if unknown:
            module.fail_json(
                msg=(
                    f"instance_ids not registered with Systems Manager in {module.region}: {', '.join(unknown)}; "
                    "SendCommand would reject the command (InvalidInstanceId)."
                ),
                targets=targets,
            )
    offline = [t["instance_id"] for t in targets if t["ping_status"] != "Online"]
    if offline:
        warn(f"{len(offline)} target(s) are not Online and would end DeliveryTimedOut: {', '.join(offline[:10])}")
    if not targets:
        warn("no managed node matches targets; the command would run nowhere.")
    module.exit_json(changed=True, targets=targets, target_count=len(targets))


def wait_for(client, sent: Dict[str, Any], wait_timeout: int) -> Tuple[Dict[str, Any], bool, bool]:
    """Poll ListCommands until the command is done or the bound passes; (command, done, whether the last poll timed
    out). A poll that times out (the client's bounded_aws_config) is followed by the next one while time is left."""
    deadline = bounds.Deadline(wait_timeout)
    interval = 1.0
    command = sent
    while True:
        late = False
        try:
            command = get_command(client, sent["CommandId"]) or command
        except AnsibleAWSError as error:
            if not bounds.is_timeout(error):
                raise
            late = True
        if command.get("Status") in COMMAND_DONE:
            return command, True, False
        if deadline.passed():
            return command, False, late
        time.sleep(min(interval, deadline.left()))
        interval = next_interval(interval)


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    problem = validate(params)
    if problem:
        module.fail_json(msg=problem)
    seconds = call_seconds(params["wait_timeout"])
    client = module.client("ssm", aws_config=bounds.bounded_aws_config(params.get("aws_config"), seconds))
    if params.get("output_s3_bucket"):
        check_output_bucket(module, params["output_s3_bucket"], seconds)

    if module.check_mode:
        check_mode(module, client)

    try:
        command = send_command(client, send_command_args(params))
    except AnsibleAWSError as error:
        if not bounds.is_timeout(error):
            raise
        module.fail_json(msg=bounds.slow_endpoint("SendCommand", seconds, "wait_timeout", client.meta.endpoint_url)
                         + " The command may have been sent all the same: ListCommands shows it.")
    command_id = command["CommandId"]
    result: Dict[str, Any] = {"changed": True, "command_id": command_id, "invocations": []}
    if not params["wait"]:
        result["command"] = command_result(command)
        module.exit_json(**result)

    command, done, late = wait_for(client, command, params["wait_timeout"])
    result["command"] = command_result(command)
    if late:  # the endpoint stops answering: no more calls to wait for
        module.fail_json(msg=unanswered_message(command_id, params["wait_timeout"], client.meta.endpoint_url), **result)
    result["invocations"] = collect_results(client, command_id)
    result["summary"] = summarise(result["invocations"])
    if not done:
        running = [i["instance_id"] for i in result["invocations"] if i["status"] not in INVOCATION_DONE]
        module.fail_json(
            msg=(
                f"command {command_id} is still {command.get('Status')} on {result['summary']['running']} of "
                f"{result['summary']['total']} nodes after wait_timeout ({params['wait_timeout']} s); it goes on "
                "running in Systems Manager. Raise wait_timeout, or follow it by its command_id."
                + offline_sentence(ping_statuses(client, running))
            ),
            **result,
        )
    if not result["invocations"]:
        warn(f"command {command_id} matched no managed node; it ran nowhere.")
    if params["fail_on_error"] and result["summary"]["failed"]:
        module.fail_json(msg=failure_message(command_id, result["summary"]), **result)
    module.exit_json(**result)


def main() -> None:
    argument_spec = dict(
        document_name=dict(type="str", default="AWS-RunShellScript",
                           choices=["AWS-RunShellScript", "AWS-RunPowerShellScript"]),
        commands=dict(type="list", elements="str", required=True),
        instance_ids=dict(type="list", elements="str"),
        targets=dict(
            type="list",
            elements="dict",
            options=dict(
                key=dict(type="str", required=True, aliases=["Key"], no_log=False),
                values=dict(type="list", elements="str", required=True, aliases=["Values"]),
            ),
        ),
        max_concurrency=dict(type="str"),
        max_errors=dict(type="str"),
        execution_timeout=dict(type="int"),
        timeout=dict(type="int"),
        working_directory=dict(type="str"),
        comment=dict(type="str"),
        output_s3_bucket=dict(type="str"),
        output_s3_key_prefix=dict(type="str", no_log=False),
        cloudwatch_output=dict(type="bool", default=False),
        cloudwatch_log_group=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=600),
        fail_on_error=dict(type="bool", default=True),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        mutually_exclusive=[["instance_ids", "targets"]],
        required_one_of=[["instance_ids", "targets"]],
        required_by={"output_s3_key_prefix": "output_s3_bucket"},
        supports_check_mode=True,
    )
    try:
        run(module)
    except AnsibleAWSError as e:
        if bounds.is_timeout(e):
            module.fail_json(msg=f"{e.message}: " + bounds.slow_endpoint(
                "the call", call_seconds(module.params["wait_timeout"]), "wait_timeout", module.params.get("endpoint_url")))
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
