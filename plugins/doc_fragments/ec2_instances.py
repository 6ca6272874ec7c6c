# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # How a module picks EC2 instances: by ID, by DescribeInstances filters, or both
    # (instance_profile_association, ssm_preflight). The module's argument spec has
    # required_one_of=[["instance_ids", "filters"]].
    DOCUMENTATION = r"""
options:
  instance_ids:
    description:
      - The EC2 instances, by ID (C(i-...)).
      - With O(filters) too, only the listed instances that also match O(filters).
      - At least one of O(instance_ids) and O(filters) is required.
    type: list
    elements: str
  filters:
    description:
      - >-
        The EC2 instances that match these C(DescribeInstances) filters, as a dictionary of filter name to one value or
        a list of values, for example V({"tag:Env": "dev"}) or V({"instance-state-name": ["running", "stopped"]}).
      - The filter names are listed in
        U(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html).
      - At least one of O(instance_ids) and O(filters) is required.
    type: dict
"""
