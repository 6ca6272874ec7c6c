#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: instance_profile_association
version_added: 0.1.0
short_description: Attach an IAM instance profile to running or stopped EC2 instances
description:
  - Associates an IAM instance profile with every EC2 instance selected by O(instance_ids) and/or
    O(filters), without stopping the instances, so that the SSM Agent on them gets credentials and
    registers with Systems Manager.
  - Uses the EC2 C(AssociateIamInstanceProfile), C(ReplaceIamInstanceProfileAssociation) and
    C(DisassociateIamInstanceProfile) APIs. M(amazon.aws.ec2_instance) changes the profile of the first
    matched instance only; this module handles any number of instances.
  - Instances that are C(terminated) or C(shutting-down) are ignored.
  - An ID in O(instance_ids) that does not exist fails the module, naming every such ID, before any change is made.
  - The current profile of an instance is read from C(DescribeIamInstanceProfileAssociations)
    (associations that are C(associating) or C(associated)), falling back to the C(IamInstanceProfile)
    that C(DescribeInstances) reports. Profiles are compared by ARN.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  instance_profile:
    description:
      - The name or the ARN of the IAM instance profile.
      - Required when O(state=present). The profile must exist; a profile that does not fails the module
        before any change is made.
      - With O(state=absent), only associations with this profile are removed; when omitted, every
        association of the selected instances is removed. With O(state=absent), a profile name that no
        longer exists in IAM is matched against the last part of the associated profile's ARN.
    type: str
    aliases: ['iam_instance_profile']
  replace:
    description:
      - What to do with an instance that already has a different instance profile, with O(state=present).
      - When V(true), its association is replaced with O(instance_profile).
      - When V(false), it is left alone, listed under RV(different), and the module warns, naming it.
    type: bool
    default: false
  state:
    description:
      - V(present) associates O(instance_profile) with the selected instances.
      - V(absent) removes the association of the selected instances where it is O(instance_profile), or
        any association when O(instance_profile) is not set.
    type: str
    choices: ['present', 'absent']
    default: present
attributes:
  check_mode:
    description: Reports which instances would be associated, replaced or left alone, and changes nothing.
    support: full
  diff_mode:
    description: >-
      Returns the profile ARN of each selected instance before and after, as C({instance_id: arn or null}).
    support: full
notes:
  - The instances must be able to reach Systems Manager (NAT, internet gateway or VPC endpoints) and the
    profile's role needs a policy such as C(AmazonSSMManagedInstanceCore) for the instances to come online
    in Systems Manager. The SSM Agent picks up new credentials within minutes; this module does not wait.
  - Needs C(ec2:DescribeInstances), C(ec2:DescribeIamInstanceProfileAssociations),
    C(ec2:AssociateIamInstanceProfile), C(ec2:ReplaceIamInstanceProfileAssociation),
    C(ec2:DisassociateIamInstanceProfile), C(iam:GetInstanceProfile) and C(iam:PassRole) on the profile's role.
extends_documentation_fragment:
  - bastionless.ssm.ec2_instances
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Give two instances the SSM instance profile
  bastionless.ssm.instance_profile_association:
    instance_ids:
      - i-0123456789abcdef0
      - i-0fedcba9876543210
    instance_profile: ssm-lab-node

- name: Give every lab node the SSM profile, replacing any other profile they have
  bastionless.ssm.instance_profile_association:
    filters:
      "tag:ssm-lab": node
      instance-state-name: [running, stopped]
    instance_profile: arn:aws:iam::123456789012:instance-profile/ssm-lab-node
    replace: true
  register: __association

- name: Show which instances changed
  ansible.builtin.debug:
    var: __association.changed_instances

- name: Remove the SSM profile from the lab nodes, leaving other profiles alone
  bastionless.ssm.instance_profile_association:
    filters:
      "tag:ssm-lab": node
    instance_profile: ssm-lab-node
    state: absent
"""

RETURN = r"""
instances:
  description: Every selected instance, with its profile before and after and what was done.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance ID.
      type: str
      sample: i-0123456789abcdef0
    before:
      description: The ARN of the instance profile before, or null.
      type: str
      sample: null
    after:
      description: The ARN of the instance profile after (predicted in check mode), or null.
      type: str
      sample: arn:aws:iam::123456789012:instance-profile/ssm-lab-node
    action:
      description:
        - What was done (or would be done in check mode).
        - V(skipped_different) means the instance has a different profile and was left alone.
      type: str
      sample: associated
      choices: [associated, replaced, disassociated, unchanged, skipped_different]
  sample:
    - instance_id: i-0123456789abcdef0
      before: null
      after: arn:aws:iam::123456789012:instance-profile/ssm-lab-node
      action: associated
changed_instances:
  description: IDs of the instances whose profile was (or in check mode would be) changed.
  returned: always
  type: list
  elements: str
  sample: ["i-0123456789abcdef0"]
different:
  description: IDs of the instances left alone because they have a different instance profile.
  returned: always
  type: list
  elements: str
  sample: ["i-0fedcba9876543210"]
instance_profile_arn:
  description: The ARN of O(instance_profile), or null when it is not set.
  returned: always
  type: str
  sample: arn:aws:iam::123456789012:instance-profile/ssm-lab-node
"""

from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional

from ansible_collections.amazon.aws.plugins.module_utils.ec2 import AnsibleEC2Error
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.iam import IAMErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list

from ansible_collections.bastionless.ssm.plugins.module_utils._task_warnings import warn

IGNORED_STATES = ("terminated", "shutting-down")
ACTIVE_ASSOCIATION_STATES = ["associating", "associated"]
CHANGING_ACTIONS = ("associated", "replaced", "disassociated")
# Filter values per DescribeIamInstanceProfileAssociations / DescribeInstances call.
FILTER_CHUNK = 100


class EC2AssociationErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleEC2Error


# --- pure helpers ----------------------------------------------------------------------------------------


def chunks(items: List[str], size: int = FILTER_CHUNK) -> Iterable[List[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def is_arn(value: str) -> bool:
    return value.startswith("arn:")


def profile_name_from_arn(arn: str) -> str:
    """arn:aws:iam::123456789012:instance-profile/path/name -> name."""
    return arn.split(":", 5)[-1].rsplit("/", 1)[-1]


def profile_matches(arn: Optional[str], wanted_arn: Optional[str], wanted_name: Optional[str] = None) -> bool:
    """Whether the associated profile ``arn`` is the wanted one: by ARN, or by name when no ARN is known."""
    if not arn:
        return False
    if wanted_arn:
        return arn == wanted_arn
    return bool(wanted_name) and profile_name_from_arn(arn) == wanted_name


def current_profiles(instances: List[Dict[str, Any]], associations: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """{instance_id: {"arn": profile ARN or None, "association_id": id or None}} for the given instances.

    An association that is associating or associated wins; otherwise the IamInstanceProfile that
    DescribeInstances reports (with no association id to act on)."""
    by_instance = {}
    for association in associations:
        if association.get("State") in ACTIVE_ASSOCIATION_STATES:
            by_instance[association["InstanceId"]] = association
    current = {}
    for instance in instances:
        instance_id = instance["InstanceId"]
        association = by_instance.get(instance_id)
        if association is not None:
            current[instance_id] = {
                "arn": (association.get("IamInstanceProfile") or {}).get("Arn"),
                "association_id": association.get("AssociationId"),
            }
        else:
            current[instance_id] = {
                "arn": (instance.get("IamInstanceProfile") or {}).get("Arn"),
                "association_id": None,
            }
    return current


def plan_instance(
    before: Optional[str], state: str, wanted_arn: Optional[str], replace: bool, wanted_name: Optional[str] = None
) -> Dict[str, Any]:
    """What to do with one instance whose current profile ARN is ``before``: {"action", "after"}."""
    if state == "present":
        if before is None:
            return {"action": "associated", "after": wanted_arn}
        if before == wanted_arn:
            return {"action": "unchanged", "after": before}
        if replace:
            return {"action": "replaced", "after": wanted_arn}
        return {"action": "skipped_different", "after": before}
    # absent
    if before is None:
        return {"action": "unchanged", "after": None}
    if (wanted_arn is None and wanted_name is None) or profile_matches(before, wanted_arn, wanted_name):
        return {"action": "disassociated", "after": None}
    return {"action": "skipped_different", "after": before}


def build_plan(
    current: Dict[str, Dict[str, Any]],
    state: str,
    wanted_arn: Optional[str],
    replace: bool,
    wanted_name: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """One entry per instance, sorted by instance id: instance_id, before, after, action, association_id."""
    plan = []
    for instance_id in sorted(current):
        before = current[instance_id]["arn"]
        step = plan_instance(before, state, wanted_arn, replace, wanted_name)
        plan.append({
            "instance_id": instance_id,
            "before": before,
            "after": step["after"],
            "action": step["action"],
            "association_id": current[instance_id]["association_id"],
        })
    return plan


def missing_instance_ids(requested: Optional[List[str]], found: Iterable[Dict[str, Any]]) -> List[str]:
    found_ids = {i["InstanceId"] for i in found}
    return sorted({i for i in requested or [] if i not in found_ids})


def live_instances(instances: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Instances that are not terminated or shutting down, once each."""
    seen = {}
    for instance in instances:
        if (instance.get("State") or {}).get("Name") in IGNORED_STATES:
            continue
        seen[instance["InstanceId"]] = instance
    return list(seen.values())


def different_warning(instance_ids: List[str], profile: str) -> str:
    return (
        f"{len(instance_ids)} instance(s) have an instance profile other than {profile} and were left alone: "
        f"{', '.join(instance_ids)}. Set replace: true to replace their profile."
    )


def summarise(plan: List[Dict[str, Any]], wanted_arn: Optional[str]) -> Dict[str, Any]:
    instances = [{k: step[k] for k in ("instance_id", "before", "after", "action")} for step in plan]
    return {
        "changed": any(step["action"] in CHANGING_ACTIONS for step in plan),
        "instances": instances,
        "changed_instances": [s["instance_id"] for s in plan if s["action"] in CHANGING_ACTIONS],
        "different": [s["instance_id"] for s in plan if s["action"] == "skipped_different"],
        "instance_profile_arn": wanted_arn,
    }


# --- AWS calls -------------------------------------------------------------------------------------------


@EC2AssociationErrorHandler.common_error_handler("describe instances")
@AWSRetry.jittered_backoff()
def describe_instances(client, filters: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    paginator = client.get_paginator("describe_instances")
    reservations = paginator.paginate(Filters=filters).build_full_result()["Reservations"]
    return [instance for reservation in reservations for instance in reservation["Instances"]]


@EC2AssociationErrorHandler.common_error_handler("describe IAM instance profile associations")
@AWSRetry.jittered_backoff()
def describe_associations(client, instance_ids: List[str]) -> List[Dict[str, Any]]:
    paginator = client.get_paginator("describe_iam_instance_profile_associations")
    filters = [
        {"Name": "instance-id", "Values": instance_ids},
        {"Name": "state", "Values": ACTIVE_ASSOCIATION_STATES},
    ]
    return paginator.paginate(Filters=filters).build_full_result()["IamInstanceProfileAssociations"]


@EC2AssociationErrorHandler.common_error_handler("associate IAM instance profile")
@AWSRetry.jittered_backoff()
def associate_profile(client, instance_id: str, profile_arn: str) -> Dict[str, Any]:
    return client.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile_arn}, InstanceId=instance_id)


@EC2AssociationErrorHandler.common_error_handler("replace IAM instance profile association")
@AWSRetry.jittered_backoff()
def replace_association(client, association_id: str, profile_arn: str) -> Dict[str, Any]:
    return client.replace_iam_instance_profile_association(
        IamInstanceProfile={"Arn": profile_arn}, AssociationId=association_id
    )


@EC2AssociationErrorHandler.common_error_handler("disassociate IAM instance profile")
@AWSRetry.jittered_backoff()
def disassociate_profile(client, association_id: str) -> Dict[str, Any]:
    return client.disassociate_iam_instance_profile(AssociationId=association_id)


@IAMErrorHandler.list_error_handler("get instance profile")
@AWSRetry.jittered_backoff()
def get_instance_profile(client, name: str) -> Optional[Dict[str, Any]]:
    return client.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]


# --- the module ------------------------------------------------------------------------------------------


def resolve_profile_arn(iam, profile: str) -> Optional[str]:
    """The ARN of the instance profile named (or with the ARN) ``profile``; None when it does not exist."""
    found = get_instance_profile(iam, profile_name_from_arn(profile) if is_arn(profile) else profile)
    if not found:
        return None
    if is_arn(profile) and found["Arn"] != profile:
        return None
    return found["Arn"]


def select_instances(client, instance_ids: Optional[List[str]], filters: Optional[Dict[str, Any]]):
    """(live instances to manage, requested ids that do not exist, requested ids that are terminated)."""
    missing, gone = [], []
    by_id: List[Dict[str, Any]] = []
    if instance_ids:
        for chunk in chunks(sorted(set(instance_ids))):
            by_id.extend(describe_instances(client, [{"Name": "instance-id", "Values": chunk}]))
        missing = missing_instance_ids(instance_ids, by_id)
        gone = sorted({i["InstanceId"] for i in by_id} - {i["InstanceId"] for i in live_instances(by_id)})
    if filters is None:
        return live_instances(by_id), missing, gone
    boto_filters = ansible_dict_to_boto3_filter_list(filters)
    if not instance_ids:
        return live_instances(describe_instances(client, boto_filters)), missing, gone
    selected: List[Dict[str, Any]] = []
    for chunk in chunks(sorted(i["InstanceId"] for i in live_instances(by_id))):
        selected.extend(describe_instances(client, boto_filters + [{"Name": "instance-id", "Values": chunk}]))
    return live_instances(selected), missing, gone


def read_current(client, instances: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    associations: List[Dict[str, Any]] = []
    for chunk in chunks(sorted(i["InstanceId"] for i in instances)):
        associations.extend(describe_associations(client, chunk))
    return current_profiles(instances, associations)


def apply_plan(client, plan: List[Dict[str, Any]], wanted_arn: Optional[str]) -> None:
    for step in plan:
        action, association_id = step["action"], step["association_id"]
        if action not in CHANGING_ACTIONS:
            continue
        if action == "associated" or (action == "replaced" and association_id is None):
            associate_profile(client, step["instance_id"], wanted_arn)
        elif action == "replaced":
            replace_association(client, association_id, wanted_arn)
        elif association_id is None:
            raise AnsibleEC2Error(
                message=(
                    f"Instance {step['instance_id']} reports instance profile {step['before']} but has no "
                    "associating or associated IAM instance profile association to remove; it may be "
                    "being disassociated already. Try again shortly."
                )
            )
        else:
            disassociate_profile(client, association_id)


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    state, profile = params["state"], params["instance_profile"]
    ec2 = module.client("ec2")

    wanted_arn, wanted_name = None, None
    if profile:
        wanted_arn = resolve_profile_arn(module.client("iam"), profile)
        if wanted_arn is None:
            if state == "present":
                module.fail_json(msg=f"IAM instance profile {profile} does not exist. Nothing was changed.")
            # absent: the profile may be gone from IAM while instances still point at it.
            wanted_arn, wanted_name = (profile, None) if is_arn(profile) else (None, profile)

    instances, missing, gone = select_instances(ec2, params["instance_ids"], params["filters"])
    if missing:
        module.fail_json(
            msg=f"Instance ID(s) not found: {', '.join(missing)}. Nothing was changed.", missing_instance_ids=missing
        )
    if gone:
        warn(f"Ignoring terminated or shutting-down instance(s): {', '.join(gone)}.")

    current = read_current(ec2, instances)
    plan = build_plan(current, state, wanted_arn, params["replace"], wanted_name)
    result = summarise(plan, wanted_arn)

    if state == "present" and result["different"]:
        warn(different_warning(result["different"], profile))

    if result["changed"] and not module.check_mode:
        apply_plan(ec2, plan, wanted_arn)

    if module._diff:
        result["diff"] = {
            "before": {s["instance_id"]: s["before"] for s in plan},
            "after": {s["instance_id"]: s["after"] for s in plan},
        }
    module.exit_json(**result)


def main() -> None:
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str"),
        filters=dict(type="dict"),
        instance_profile=dict(type="str", aliases=["iam_instance_profile"]),
        replace=dict(type="bool", default=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        required_one_of=[["instance_ids", "filters"]],
        required_if=[["state", "present", ["instance_profile"]]],
        supports_check_mode=True,
    )
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
