# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A role's inputs as its problems filter takes them: a dict of the role's variables without their prefix, each
missing one at the role's default, an unknown one an error (a misspelt key would otherwise go unchecked)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def role_inputs(given, defaults: dict, filter_name: str) -> dict:
    """``given`` over ``defaults``; fails naming the filter and the keys it does not know."""
    if not isinstance(given, dict):
        raise AnsibleFilterError(f"{filter_name}: give the role's inputs as a dict (its variables without their "
                                 f"prefix), not {type(given).__name__}.")
    unknown = sorted(str(key) for key in given if key not in defaults)
    if unknown:
        raise AnsibleFilterError(f"{filter_name}: {', '.join(unknown)} is not an input it knows; use "
                                 f"{', '.join(sorted(defaults))}.")
    return {**defaults, **given}
