# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A warning for the task's result, for the collection's modules (all built on amazon.aws's AnsibleAWSModule).

amazon.aws 10's ``AnsibleAWSModule.warn`` also hands its warnings to ``exit_json``, which ansible-core 2.19 reports as
deprecated ("Passing `warnings` to `exit_json` or `fail_json` is deprecated") on every task that warns: a second
message the user can do nothing about. ``warn`` here records the warning where ansible-core reads it for the result,
as ``AnsibleModule.warn`` does, and nothing else."""

from ansible.module_utils.common.warnings import warn as _warn


def warn(message: str) -> None:
    _warn(message)
