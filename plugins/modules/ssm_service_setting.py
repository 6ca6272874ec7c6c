#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_service_setting
version_added: 0.1.0
short_description: Manage one AWS Systems Manager service setting
description:
  - Sets an AWS Systems Manager service setting to a value, or resets it to the AWS default, with the
    C(GetServiceSetting), C(UpdateServiceSetting) and C(ResetServiceSetting) APIs.
  - Its main use here is Default Host Management Configuration (DHMC), which gives every EC2 instance in
    the account and region SSM credentials without an instance profile. Turn it on by setting
    C(/ssm/managed-instance/default-ec2-instance-management-role) to the name, with its path, of a role
    that trusts C(ssm.amazonaws.com) and has the C(AmazonSSMManagedEC2InstanceDefaultPolicy) policy.
  - Service settings are per account and region.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  setting_id:
    description:
      - The setting, either as its short ID starting with C(/ssm/), for example
        C(/ssm/managed-instance/default-ec2-instance-management-role), or as its full ARN.
      - A short ID is expanded to C(arn:<partition>:ssm:<region>:<account>:servicesetting<setting_id>),
        with the account and partition of the caller (STS C(GetCallerIdentity)).
    type: str
    required: true
  value:
    description:
      - The value the setting should have. Required when O(state=present).
      - For the DHMC setting, the role name with its path, without a leading slash, for example
        C(service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole).
    type: str
  state:
    description:
      - V(present) sets the setting to O(value) when it differs.
      - V(absent) resets the setting to the AWS default; this changes something only when the setting's
        status is C(Customized).
    type: str
    choices: ['present', 'absent']
    default: present
attributes:
  check_mode:
    description:
      - Reports whether the setting would be changed or reset, and changes nothing.
      - With O(state=absent), the predicted RV(setting.setting_value) is null, because AWS's default value is
        known only once the setting is reset.
    support: full
  diff_mode:
    description: Returns the setting's value and status before and after.
    support: full
notes:
  - Needs C(ssm:GetServiceSetting), C(ssm:UpdateServiceSetting), C(ssm:ResetServiceSetting) and, for a short
    O(setting_id), C(sts:GetCallerIdentity) (which needs no permission).
  - DHMC only helps instances that use IMDSv2 and can reach Systems Manager.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: Create the role that Default Host Management Configuration uses
  amazon.aws.iam_role:
    name: AWSSystemsManagerDefaultEC2InstanceManagementRole
    path: /service-role/
    assume_role_policy_document: >-
      {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
      "Principal": {"Service": "ssm.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    managed_policies:
      - arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy

- name: Turn on Default Host Management Configuration
  bastionless.ssm.ssm_service_setting:
    setting_id: /ssm/managed-instance/default-ec2-instance-management-role
    value: service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole
  register: __dhmc

- name: Show the setting
  ansible.builtin.debug:
    var: __dhmc.setting

- name: Turn Default Host Management Configuration off again (reset to the AWS default)
  bastionless.ssm.ssm_service_setting:
    setting_id: /ssm/managed-instance/default-ec2-instance-management-role
    state: absent
"""

RETURN = r"""
setting:
  description: The service setting after the change (predicted in check mode).
  returned: always
  type: dict
  contains:
    setting_id:
      description: The short ID of the setting.
      type: str
      sample: /ssm/managed-instance/default-ec2-instance-management-role
    setting_value:
      description: The value of the setting.
      type: str
      sample: service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole
    status:
      description: C(Default), C(Customized) or C(PendingUpdate).
      type: str
      sample: Customized
    last_modified_date:
      description: When the setting was last changed.
      type: str
      sample: "2025-01-01T12:00:00+00:00"
    last_modified_user:
      description: The ARN of who last changed the setting.
      type: str
      sample: arn:aws:iam::123456789012:user/admin
    arn:
      description: The ARN of the setting.
      type: str
      sample: arn:aws:ssm:us-east-1:123456789012:servicesetting/ssm/managed-instance/default-ec2-instance-management-role
"""

from copy import deepcopy
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

SHORT_ID_PREFIX = "/ssm/"


class AnsibleSSMError(AnsibleAWSError):
    pass


class SSMServiceSettingErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMError


# --- pure helpers ----------------------------------------------------------------------------------------


def is_arn(setting_id: str) -> bool:
    return setting_id.startswith("arn:")


def valid_setting_id(setting_id: str) -> bool:
    return is_arn(setting_id) or (setting_id.startswith(SHORT_ID_PREFIX) and len(setting_id) > len(SHORT_ID_PREFIX))


def partition_of(arn: str) -> str:
    """arn:aws-cn:sts::123456789012:assumed-role/x -> aws-cn."""
    parts = arn.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else "aws"


def setting_arn(
    setting_id: str, region: Optional[str] = None, account: Optional[str] = None, partition: str = "aws"
) -> str:
    """The full ARN of a setting given by short id (``/ssm/...``) or already by ARN."""
    if is_arn(setting_id):
        return setting_id
    return f"arn:{partition}:ssm:{region}:{account}:servicesetting{setting_id}"


def normalise_setting(setting: Dict[str, Any]) -> Dict[str, Any]:
    return camel_dict_to_snake_dict(setting)


def plan_setting(current: Dict[str, Any], state: str, value: Optional[str]) -> Tuple[bool, Dict[str, Any]]:
    """(changed, predicted setting after) from the current snake_case setting."""
    after = deepcopy(current)
    if state == "present":
        if current.get("setting_value") == value:
            return False, after
        after["setting_value"] = value
        after["status"] = "Customized"
        return True, after
    if current.get("status") != "Customized":
        return False, after
    # AWS's default value is known only once the setting is reset.
    after["setting_value"] = None
    after["status"] = "Default"
    return True, after


def setting_diff(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    keys = ("setting_value", "status")
    return {"before": {k: before.get(k) for k in keys}, "after": {k: after.get(k) for k in keys}}


# --- AWS calls -------------------------------------------------------------------------------------------


@SSMServiceSettingErrorHandler.common_error_handler("get caller identity")
@AWSRetry.jittered_backoff()
def get_caller_identity(client) -> Dict[str, Any]:
    return client.get_caller_identity()


@SSMServiceSettingErrorHandler.common_error_handler("get service setting")
@AWSRetry.jittered_backoff()
def get_service_setting(client, setting_id: str) -> Dict[str, Any]:
    return client.get_service_setting(SettingId=setting_id)["ServiceSetting"]


@SSMServiceSettingErrorHandler.common_error_handler("update service setting")
@AWSRetry.jittered_backoff()
def update_service_setting(client, setting_id: str, value: str) -> None:
    client.update_service_setting(SettingId=setting_id, SettingValue=value)


@SSMServiceSettingErrorHandler.common_error_handler("reset service setting")
@AWSRetry.jittered_backoff()
def reset_service_setting(client, setting_id: str) -> Dict[str, Any]:
    return client.reset_service_setting(SettingId=setting_id)["ServiceSetting"]


# --- the module ------------------------------------------------------------------------------------------


def expand_setting_id(module: AnsibleAWSModule, setting_id: str) -> str:
    if is_arn(setting_id):
        return setting_id
    identity = get_caller_identity(module.client("sts"))
    return setting_arn(setting_id, module.region, identity["Account"], partition_of(identity.get("Arn", "")))


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    if not valid_setting_id(params["setting_id"]):
        module.fail_json(
            msg=(
                f"setting_id must be a short ID starting with {SHORT_ID_PREFIX} or a full ARN, "
                f"not {params['setting_id']!r}."
            )
        )
    arn = expand_setting_id(module, params["setting_id"])
    client = module.client("ssm")

    before = normalise_setting(get_service_setting(client, arn))
    changed, after = plan_setting(before, params["state"], params["value"])

    if changed and not module.check_mode:
        if params["state"] == "present":
            update_service_setting(client, arn, params["value"])
        else:
            reset_service_setting(client, arn)
        after = normalise_setting(get_service_setting(client, arn))

    result = {"changed": changed, "setting": after}
    if module._diff:
        result["diff"] = setting_diff(before, after)
    module.exit_json(**result)


def main() -> None:
    argument_spec = dict(
        setting_id=dict(type="str", required=True),
        value=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        required_if=[["state", "present", ["value"]]],
        supports_check_mode=True,
    )
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
