#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_association
version_added: 0.1.0
short_description: Manage a State Manager association by name
description:
  - Creates, updates or deletes a Systems Manager State Manager association, found by its association name
    (C(AssociationName)). An association makes Systems Manager run a document on the managed nodes it targets,
    when it is created or changed and then on its schedule, with its own rate control (O(max_concurrency),
    O(max_errors)); each run is an execution with a status for every node.
  - This is pull mode at fleet scale; see the collection's State Manager guide (docs/state-manager.md) for when
    to prefer it to running playbooks from a controller.
  - An option that is not set leaves that setting as it is on an existing association (and AWS's default on a new
    one). As C(UpdateAssociation) resets every optional setting a request leaves out, the module always sends the
    association's full settings.
  - The input is checked before any change (schedule, MaxErrors, MaxConcurrency, targets, the output bucket), so a
    bad input fails without creating or changing anything. An association whose targets match no managed node is
    refused unless O(allow_no_targets) is set.
  - With O(wait), the module waits for the run that the change starts (the first one for a new association), and
    returns it with each node's status.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  name:
    description:
      - The association name (C(AssociationName)), which identifies the association for this module. It must be
        unique in the account and region; the module fails when several associations carry it.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the association; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  document_name:
    description:
      - The SSM document the association runs, for example V(AWS-RunShellScript) or V(AWS-ApplyAnsiblePlaybooks).
      - Required to create an association.
    type: str
  document_version:
    description:
      - The version of the document, V($DEFAULT), V($LATEST) or a number. AWS's default is V($DEFAULT).
    type: str
  parameters:
    description:
      - The document's parameters. Each value is a list of strings, as the API holds them; a single value is taken
        as a list of one.
    type: dict
  targets:
    description:
      - The managed nodes, in C(CreateAssociation)'s C(Targets) syntax. Entries are combined with AND, the values
        of one entry with OR. At most 5 entries.
      - Systems Manager resolves them at every run, so nodes tagged later are picked up.
      - Required to create an association.
    type: list
    elements: dict
    suboptions:
      key:
        description: V(InstanceIds), V(tag-key), V(tag:<name>), V(resource-groups:Name) or
          V(resource-groups:ResourceTypeFilters).
        type: str
        required: true
      values:
        description: The values of the key.
        type: list
        elements: str
        required: true
  allow_no_targets:
    description:
      - Create or update the association even when its targets match no managed node now (a fleet that has not
        been tagged yet). Without it, that is an error, as it is more often a mistyped tag.
      - Targets by resource group are not looked up, and never refused.
    type: bool
    default: false
  schedule_expression:
    description:
      - When the association runs again, V(rate(N minutes|hours|days)) (30 minutes at least) or
        V(cron(...)) (6 fields, for example V(cron(0 2 ? * SUN *))).
      - V("") removes the schedule; the association then runs only when it is created or changed.
    type: str
  apply_only_at_cron_interval:
    description:
      - Run only on the cron schedule, not also at once when the association is created or changed. Needs a
        V(cron(...)) O(schedule_expression). O(wait) then does not wait.
    type: bool
  schedule_offset:
    description:
      - How many days after each time of the cron O(schedule_expression) the association runs, from 1 to 6. With
        V(cron(0 2 ? * THU#2 *)) and V(3), it runs the Sunday after each second Thursday. Needs
        O(apply_only_at_cron_interval) true, as AWS does.
      - V(0) removes the offset.
    type: int
  max_concurrency:
    description:
      - How many targets run the document at the same time, a number (V(10)) or a share of the targets (V(10%)).
        AWS's default is all of them.
      - V("") removes the setting.
    type: str
  max_errors:
    description:
      - How many targets may fail before the run stops going to more targets, a number or a share (V(0%) to
        V(100%)). V(0) stops at the first error; with V(3), at the fourth. Targets already running finish.
      - V("") removes the setting.
    type: str
  compliance_severity:
    description:
      - The severity of the association's compliance status.
    type: str
    choices: [CRITICAL, HIGH, MEDIUM, LOW, UNSPECIFIED]
  sync_compliance:
    description:
      - V(AUTO) lets Systems Manager report the association's compliance; V(MANUAL) leaves it to
        C(PutComplianceItems).
    type: str
    choices: [AUTO, MANUAL]
  output_s3_bucket:
    description:
      - The S3 bucket that each node's output is written to. The bucket must exist; it is looked up before any
        change.
      - V("") stops writing output to S3.
    type: str
  output_s3_key_prefix:
    description:
      - The key prefix of the output in O(output_s3_bucket).
    type: str
  wait_timeout:
    default: 600
attributes:
  check_mode:
    description: Reports what would change and changes nothing; the returned RV(association) is then a prediction.
    support: full
  diff_mode:
    description: Returns the association's settings before and after (V({}) when it does not exist).
    support: full
notes:
  - Needs C(ssm:ListAssociations), C(ssm:DescribeAssociation), C(ssm:CreateAssociation), C(ssm:UpdateAssociation),
    C(ssm:DeleteAssociation), C(ssm:DescribeInstanceInformation), C(ssm:DescribeAssociationExecutions),
    C(ssm:DescribeAssociationExecutionTargets), and C(s3:ListBucket) on O(output_s3_bucket).
  - The nodes' instance profile needs to write to O(output_s3_bucket) for the output to arrive there.
seealso:
  - module: bastionless.ssm.ssm_association_info
  - module: bastionless.ssm.ssm_command
  - name: AWS Systems Manager State Manager
    description: What associations are and how they run.
    link: https://docs.aws.amazon.com/systems-manager/latest/userguide/systems-manager-state.html
  - name: Rate control for associations
    description: MaxConcurrency and MaxErrors.
    link: https://docs.aws.amazon.com/systems-manager/latest/userguide/systems-manager-state-manager-targets-and-rate-controls.html
extends_documentation_fragment:
  - bastionless.ssm.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Keep chrony installed on every web node, checked every 30 minutes, two nodes at a time
  bastionless.ssm.ssm_association:
    name: web-chrony
    document_name: AWS-RunShellScript
    parameters:
      commands:
        - command -v chronyd || (apt-get update && apt-get install -y chrony)
    targets:
      - key: tag:Role
        values: [web]
    schedule_expression: rate(30 minutes)
    max_concurrency: "2"
    max_errors: 10%
    compliance_severity: HIGH
  register: __association

- name: Show each node's status in the first run
  ansible.builtin.debug:
    var: __association.execution.targets

- name: Only run on Sunday nights from now on, leaving the rest as it is
  bastionless.ssm.ssm_association:
    name: web-chrony
    schedule_expression: cron(0 2 ? * SUN *)
    apply_only_at_cron_interval: true

- name: Upgrade packages the Sunday after each Patch Tuesday (the second Tuesday, then 5 days on)
  bastionless.ssm.ssm_association:
    name: web-upgrade
    document_name: AWS-RunShellScript
    parameters:
      commands:
        - apt-get update && apt-get -y upgrade
    targets:
      - key: tag:Role
        values: [web]
    schedule_expression: cron(0 3 ? * TUE#2 *)
    apply_only_at_cron_interval: true
    schedule_offset: 5

- name: Delete the association
  bastionless.ssm.ssm_association:
    name: web-chrony
    state: absent
"""

RETURN = r"""
association:
  description:
    - The association as C(DescribeAssociation) returns it (snake_case keys; the document parameters keep their
      names), predicted in check mode. V({}) when it does not exist.
  returned: always
  type: dict
  contains:
    association_id:
      description: The association's ID.
      type: str
      sample: 8dfe3659-4309-493a-8755-0123456789ab
    association_name:
      description: The association name.
      type: str
      sample: web-chrony
    association_version:
      description: The version, which each update increases.
      type: str
      sample: "2"
    name:
      description: The document.
      type: str
      sample: AWS-RunShellScript
    targets:
      description: The targets.
      type: list
      elements: dict
      sample: [{"key": "tag:Role", "values": ["web"]}]
    schedule_expression:
      description: The schedule, when there is one.
      type: str
      sample: rate(30 minutes)
    overview:
      description: The status of the last run, with its count of nodes by status.
      type: dict
      sample: {"status": "Success", "detailed_status": "Success", "association_status_aggregated_count": {"Success": 2}}
changes:
  description: The settings that were (or in check mode would be) changed, in AWS's names.
  returned: always
  type: list
  elements: str
  sample: [ScheduleExpression, MaxErrors]
execution:
  description:
    - The run that the change started, after O(wait), as C(DescribeAssociationExecutions) shows it, with
      C(targets), each node's row of C(DescribeAssociationExecutionTargets), and a C(summary).
  returned: when the association was created or updated with O(wait), and a run started
  type: dict
  contains:
    execution_id:
      description: The execution's ID.
      type: str
      sample: 4a8f1e59-1a0c-4a5e-9c6e-0123456789ab
    status:
      description: C(Success) or C(Failed) once it has ended.
      type: str
      sample: Success
    resource_count_by_status:
      description: AWS's count of nodes by status.
      type: str
      sample: "{Success=2}"
    targets:
      description: Each node's status.
      type: list
      elements: dict
      sample: [{"resource_id": "i-0123456789abcdef0", "status": "Success", "detailed_status": "Success"}]
    summary:
      description: The number of nodes, by status, and of failed ones.
      type: dict
      sample: {"total": 2, "by_status": {"Success": 2}, "failed": 0}
"""

import time
from copy import deepcopy
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import is_ansible_aws_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.bastionless.ssm.plugins.module_utils import _association as assoc
from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

EXECUTION_DONE = ("Success", "Failed", "TimedOut", "Cancelled")
AnsibleSSMAssociationError = assoc.AnsibleSSMAssociationError
SSMAssociationErrorHandler = assoc.SSMAssociationErrorHandler


# --- AWS calls (those ssm_association_info makes too are in module_utils/_association.py) -----------------


@SSMAssociationErrorHandler.common_error_handler("create association")
@AWSRetry.jittered_backoff()
def create_association(client, args: Dict[str, Any]) -> Dict[str, Any]:
    return client.create_association(**args)["AssociationDescription"]


@SSMAssociationErrorHandler.common_error_handler("update association")
@AWSRetry.jittered_backoff()
def update_association(client, args: Dict[str, Any]) -> Dict[str, Any]:
    return client.update_association(**args)["AssociationDescription"]


@SSMAssociationErrorHandler.deletion_error_handler("delete association")
@AWSRetry.jittered_backoff()
def delete_association(client, association_id: str) -> bool:
    client.delete_association(AssociationId=association_id)
    return True


@SSMAssociationErrorHandler.common_error_handler("describe instance information")
@AWSRetry.jittered_backoff()
def matching_nodes(client, filters: List[Dict[str, Any]]) -> List[str]:
    """Up to one page of the managed nodes that match ``filters`` (enough to tell none from some)."""
    rows = client.describe_instance_information(Filters=filters, MaxResults=assoc.PAGE_SIZE)["InstanceInformationList"]
    return [row["InstanceId"] for row in rows]


@SSMAssociationErrorHandler.list_error_handler("look up the output bucket", default_value=False)
@AWSRetry.jittered_backoff()
def bucket_exists(s3, bucket: str) -> bool:
    s3.head_bucket(Bucket=bucket)
    return True


# --- the module ------------------------------------------------------------------------------------------


def find(client, name: str) -> Optional[Dict[str, Any]]:
    found = [a for a in assoc.list_associations(client, [{"key": "AssociationName", "value": name}])
             if a.get("AssociationName") == name]
    if len(found) > 1:
        ids = ", ".join(a["AssociationId"] for a in found)
        raise AnsibleSSMAssociationError(
            message=f"{len(found)} associations are named {name!r} ({ids}); this module needs the name to be unique. "
                    "Rename or delete all but one.")
    return assoc.describe_association(client, found[0]["AssociationId"]) if found else None


def check_references(module: AnsibleAWSModule, client, settings: Dict[str, Any]) -> None:
    """Fail before any change when the targets match no node or the output bucket does not exist."""
    filters = assoc.target_filters(settings)
    if filters and not module.params["allow_no_targets"] and not matching_nodes(client, filters):
        module.fail_json(msg=(
            f"targets ({assoc.describe_targets(settings)}) match no managed node in {module.region}. Check the tag "
            "key and values (tag:<name> is case-sensitive) and that the nodes are registered with Systems Manager, "
            "or set allow_no_targets to create the association for nodes tagged later."))
    location = (settings.get("OutputLocation") or {}).get("S3Location") or {}
    bucket = location.get("OutputS3BucketName")
    if bucket and not bucket_exists(module.client("s3"), bucket):
        module.fail_json(msg=(
            f"output_s3_bucket {bucket!r} does not exist or cannot be read. Create it first (the transfer_bucket "
            "role makes one), or correct the name."))


def document_failure(module: AnsibleAWSModule, settings: Dict[str, Any], error: AnsibleAWSError) -> None:
    module.fail_json(msg=(
        f"document_name {settings.get('Name')!r} (version {settings.get('DocumentVersion')}) does not exist in "
        f"{module.region} or cannot be used by an association. Check its name (AWS-RunShellScript, "
        "AWS-ApplyAnsiblePlaybooks, or a document of the account) and version."),
        error=str(error.exception or error))


def wait_execution(client, association_id: str, version: str, timeout: int) -> Optional[Dict[str, Any]]:
    """The first execution of ``version`` once it has ended; None when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    interval = 1.0
    while True:
        runs = [e for e in assoc.describe_executions(client, association_id)
                if str(e.get("AssociationVersion")) == version]
        runs.sort(key=lambda e: e["CreatedTime"].timestamp() if hasattr(e["CreatedTime"], "timestamp") else e["CreatedTime"])
        if runs and runs[0].get("Status") in EXECUTION_DONE:
            return runs[0]
        left = deadline - time.monotonic()
        if left <= 0:
            return runs[0] if runs else None
        time.sleep(min(interval, left))
        interval = min(interval * 1.5, 10.0)


def execution_result(client, association_id: str, execution: Dict[str, Any]) -> Dict[str, Any]:
    rows = assoc.execution_targets(client, association_id, execution["ExecutionId"])
    result = camel_dict_to_snake_dict(execution)
    result["targets"] = [camel_dict_to_snake_dict(row) for row in rows]
    result["summary"] = assoc.summarise(rows)
    return result


association_result = assoc.association_result


def predicted(before: Optional[Dict[str, Any]], settings: Dict[str, Any], name: str) -> Dict[str, Any]:
    description = deepcopy(before) if before else {"AssociationName": name}
    for key in assoc.SETTINGS:
        if settings.get(key) is None:
            description.pop(key, None)
        else:
            description[key] = deepcopy(settings[key])
    if before:
        description["AssociationVersion"] = str(int(before.get("AssociationVersion", "1")) + 1)
    return description


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    problem = assoc.validate(params)
    if problem:
        module.fail_json(msg=problem)
    client = module.client("ssm", retry_decorator=AWSRetry.jittered_backoff())
    name = params["name"]
    before = find(client, name)
    current = assoc.current(before)
    result: Dict[str, Any] = {"changed": False, "changes": []}

    if params["state"] == "absent":
        if before is not None:
            result.update(changed=True, changes=list(assoc.SETTINGS))
            if not module.check_mode:
                delete_association(client, before["AssociationId"])
        result["association"] = {}
        if module._diff:
            result["diff"] = {"before": assoc.snake_settings(current), "after": {}}
        module.exit_json(**result)

    wanted = assoc.requested(params)
    if before is None:
        missing = [option for option, key in (("document_name", "Name"), ("targets", "Targets")) if key not in wanted]
        if missing:
            module.fail_json(msg=f"association {name!r} does not exist; creating it needs {' and '.join(missing)}.")
    settings = assoc.merged(current, wanted)
    problem = assoc.settings_problem(settings)
    if problem:
        module.fail_json(msg=problem)
    changes = assoc.differences(current, settings)
    result["changes"] = changes
    if module._diff:
        result["diff"] = {"before": assoc.snake_settings(current), "after": assoc.snake_settings(settings)}
    if not changes:
        result["association"] = association_result(before)
        module.exit_json(**result)

    result["changed"] = True
    if "Targets" in changes or "OutputLocation" in changes:
        check_references(module, client, settings)
    if module.check_mode:
        result["association"] = association_result(predicted(before, settings, name))
        module.exit_json(**result)

    request = assoc.request(settings, name)
    try:
        if before is None:
            after = create_association(client, request)
        else:
            after = update_association(client, {**request, "AssociationId": before["AssociationId"],
                                                "AssociationVersion": before["AssociationVersion"]})
    except is_ansible_aws_error_code(["InvalidDocument", "InvalidDocumentVersion"]) as e:
        document_failure(module, settings, e)
    result["association"] = association_result(after)

    if params["wait"] and not settings.get("ApplyOnlyAtCronInterval"):
        execution = wait_execution(client, after["AssociationId"], str(after["AssociationVersion"]),
                                   params["wait_timeout"])
        if execution is None or execution.get("Status") not in EXECUTION_DONE:
            module.fail_json(msg=(
                f"association {name!r} (version {after['AssociationVersion']}) has not finished a run after "
                f"wait_timeout ({params['wait_timeout']} s); it goes on in Systems Manager. Raise wait_timeout, or "
                "follow it with bastionless.ssm.ssm_association_info."), **result)
        result["execution"] = execution_result(client, after["AssociationId"], execution)
        summary = result["execution"]["summary"]
        if summary["failed"]:
            warn(f"association {name!r} is in place, but its run did not succeed on {summary['failed']} of "
                 f"{summary['total']} nodes ({summary['by_status']}); see execution.targets.")
        result["association"] = association_result(assoc.describe_association(client, after["AssociationId"]))
    module.exit_json(**result)


def main() -> None:
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        document_name=dict(type="str"),
        document_version=dict(type="str"),
        parameters=dict(type="dict"),
        targets=dict(
            type="list",
            elements="dict",
            options=dict(
                key=dict(type="str", required=True, no_log=False),
                values=dict(type="list", elements="str", required=True),
            ),
        ),
        allow_no_targets=dict(type="bool", default=False),
        schedule_expression=dict(type="str"),
        apply_only_at_cron_interval=dict(type="bool"),
        schedule_offset=dict(type="int"),
        max_concurrency=dict(type="str"),
        max_errors=dict(type="str"),
        compliance_severity=dict(type="str", choices=["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNSPECIFIED"]),
        sync_compliance=dict(type="str", choices=["AUTO", "MANUAL"]),
        output_s3_bucket=dict(type="str"),
        output_s3_key_prefix=dict(type="str", no_log=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=600),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
