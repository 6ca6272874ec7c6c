#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_association_info
version_added: 0.1.0
short_description: List State Manager associations and the status of their runs on each node
description:
  - Lists the State Manager associations of the account and region (C(ListAssociations)), or the one named, each
    with its settings (C(DescribeAssociation)) and its latest runs (C(DescribeAssociationExecutions)) with every
    node's status (C(DescribeAssociationExecutionTargets)).
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  name:
    description:
      - Only the associations with this association name.
    type: str
  document_name:
    description:
      - Only the associations that run this document.
    type: str
  executions:
    description:
      - How many of each association's latest runs to return, newest first, each with its nodes. V(0) returns
        none and makes no call per run.
    type: int
    default: 1
attributes:
  check_mode:
    description: The module changes nothing; it runs in check mode as it does otherwise.
    support: full
notes:
  - Needs C(ssm:ListAssociations), C(ssm:DescribeAssociation), C(ssm:DescribeAssociationExecutions) and
    C(ssm:DescribeAssociationExecutionTargets).
seealso:
  - module: bastionless.ssm.ssm_association
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: List every association with the status of its last run on each node
  bastionless.ssm.ssm_association_info:
  register: __associations

- name: The last three runs of one association
  bastionless.ssm.ssm_association_info:
    name: web-chrony
    executions: 3
  register: __chrony

- name: Show the nodes where the last run failed
  ansible.builtin.debug:
    msg: "{{ __chrony.associations[0].executions[0].targets | rejectattr('status', 'eq', 'Success') | list }}"
  when: __chrony.associations and __chrony.associations[0].executions
"""

RETURN = r"""
associations:
  description: The associations, oldest first; V([]) when none matches.
  returned: always
  type: list
  elements: dict
  contains:
    association_id:
      description: The association's ID.
      type: str
      sample: 8dfe3659-4309-493a-8755-0123456789ab
    association_name:
      description: The association name.
      type: str
      sample: web-chrony
    name:
      description: The document.
      type: str
      sample: AWS-RunShellScript
    parameters:
      description: The document's parameters, their names as the document has them.
      type: dict
      sample: {"commands": ["uptime"]}
    overview:
      description: The status of the last run, with its count of nodes by status.
      type: dict
      sample: {"status": "Failed", "detailed_status": "Failed", "association_status_aggregated_count": {"Failed": 1}}
    executions:
      description: The latest runs, newest first, each with C(targets), the status of every node.
      type: list
      elements: dict
      sample: [{"execution_id": "4a8f1e59-1a0c-4a5e-9c6e-0123456789ab", "status": "Success",
                "resource_count_by_status": "{Success=1}",
                "targets": [{"resource_id": "i-0123456789abcdef0", "status": "Success"}]}]
"""

from typing import Any
from typing import Dict

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.bastionless.ssm.plugins.module_utils import _association as assoc


def association_result(client, description: Dict[str, Any], count: int) -> Dict[str, Any]:
    result = assoc.association_result(description)
    result["executions"] = []
    if count > 0:
        for execution in assoc.describe_executions(client, description["AssociationId"], max(count, 1))[:count]:
            item = camel_dict_to_snake_dict(execution)
            item["targets"] = [camel_dict_to_snake_dict(row) for row in
                               assoc.execution_targets(client, description["AssociationId"], execution["ExecutionId"])]
            result["executions"].append(item)
    return result


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    if params["executions"] < 0 or params["executions"] > assoc.PAGE_SIZE:
        module.fail_json(msg=f"executions must be from 0 to {assoc.PAGE_SIZE}, not {params['executions']}.")
    client = module.client("ssm", retry_decorator=AWSRetry.jittered_backoff())
    filters = []
    if params.get("name"):
        filters.append({"key": "AssociationName", "value": params["name"]})
    if params.get("document_name"):
        filters.append({"key": "Name", "value": params["document_name"]})
    associations = [association_result(client, assoc.describe_association(client, item["AssociationId"]),
                                       params["executions"])
                    for item in assoc.list_associations(client, filters)]
    module.exit_json(changed=False, associations=associations)


def main() -> None:
    argument_spec = dict(
        name=dict(type="str"),
        document_name=dict(type="str"),
        executions=dict(type="int", default=1),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
