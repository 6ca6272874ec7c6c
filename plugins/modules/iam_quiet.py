#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: iam_quiet
version_added: 0.1.0
short_description: Run amazon.aws's IAM role and user modules without the return values amazon.aws 10 deprecates
description:
  - Runs M(amazon.aws.iam_role), M(amazon.aws.iam_role_info) or M(amazon.aws.iam_user) with the options given in
    O(params), exactly as a task naming that module would, and returns its result without the return values that
    amazon.aws 10 deprecates on every call, whatever the options.
  - Those modules print a C([DEPRECATION WARNING]) at every run, about C(iam_role.assume_role_policy_document_raw)
    (M(amazon.aws.iam_role), M(amazon.aws.iam_role_info)) and the C(iam_user) return key (M(amazon.aws.iam_user)),
    and ansible-core adds a C([WARNING]) on how to turn all deprecation warnings off. This module leaves those values
    out of the result, so that no task can come to depend on them, and with them the notices about exactly those
    values. Every other deprecation, warning and return value is passed on.
  - The collection's roles use it for every call of those modules, so that C(site.yml) prints no warning a user
    would have to learn to ignore.
  - C(module_defaults) for the module named in O(module), or for its group C(group/amazon.aws.aws), apply as they
    would to a task naming that module.
  - Check mode and diff mode are those of the module named in O(module).
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  module:
    description:
      - The amazon.aws module to run, by its fully qualified name.
    type: str
    required: true
    choices: [amazon.aws.iam_role, amazon.aws.iam_role_info, amazon.aws.iam_user]
  params:
    description:
      - The options of O(module), as a task naming that module would give them.
    type: dict
    required: true
attributes:
  action:
    description: Runs as an action plugin on the controller, which then runs O(module) where the task runs.
    support: full
  check_mode:
    description: As O(module) supports it.
    support: full
  diff_mode:
    description: As O(module) supports it.
    support: full
notes:
  - The deprecated values are those of amazon.aws 10. A later amazon.aws that no longer returns them, nor warns about
    them, gives the same result through this module as without it.
seealso:
  - module: amazon.aws.iam_role
  - module: amazon.aws.iam_role_info
  - module: amazon.aws.iam_user
"""

EXAMPLES = r"""
- name: Read a role, with its trust policy
  bastionless.ssm.iam_quiet:
    module: amazon.aws.iam_role_info
    params:
      name: bastionless-ssm-instance
  register: role

- name: Show the services the role trusts
  ansible.builtin.debug:
    msg: "{{ role.iam_roles[0].assume_role_policy_document.Statement | map(attribute='Principal') | list }}"
  when: role.iam_roles | length > 0

- name: Tag an IAM user for Run As, leaving its other tags and policies alone
  bastionless.ssm.iam_quiet:
    module: amazon.aws.iam_user
    params:
      name: alice
      tags:
        SSMSessionRunAs: alice
      purge_tags: false
      purge_policies: false
      state: present
"""

RETURN = r"""
iam_role:
  description:
    - With O(module=amazon.aws.iam_role), the role as M(amazon.aws.iam_role) returns it, without
      C(assume_role_policy_document_raw) (C(assume_role_policy_document) holds the same document).
  returned: when O(module=amazon.aws.iam_role) and its C(state) is C(present)
  type: dict
  sample: {"arn": "arn:aws:iam::123456789012:role/bastionless-ssm-instance", "role_name": "bastionless-ssm-instance"}
iam_roles:
  description:
    - With O(module=amazon.aws.iam_role_info), the roles as M(amazon.aws.iam_role_info) returns them, each without
      C(assume_role_policy_document_raw).
  returned: when O(module=amazon.aws.iam_role_info)
  type: list
  elements: dict
  sample: [{"arn": "arn:aws:iam::123456789012:role/bastionless-ssm-instance", "role_name": "bastionless-ssm-instance"}]
user:
  description:
    - With O(module=amazon.aws.iam_user), the user as M(amazon.aws.iam_user) returns it. The deprecated C(iam_user)
      key, which held the same, is left out.
  returned: when O(module=amazon.aws.iam_user) and its C(state) is C(present)
  type: dict
  sample: {"arn": "arn:aws:iam::123456789012:user/alice", "user_name": "alice"}
"""
