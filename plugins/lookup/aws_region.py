# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: aws_region
author:
  - bastionless.ssm maintainers (@bastionless)
version_added: 0.1.0
short_description: The AWS region to work in, resolved the way the AWS modules resolve it
description:
  - Returns the first of the regions given that is not empty. Else the region of the environment (E(AWS_REGION),
    E(AWS_DEFAULT_REGION), E(EC2_REGION), in that order); else the region of the AWS profile in use, from the shared
    configuration file (E(AWS_CONFIG_FILE), C(~/.aws/config)); else an empty string.
  - The roles of this collection resolve their C(*_region) variables with it. Their defaults are
    C(bastionless_region), so one region set in the inventory reaches every role, and without it they use the region
    the amazon.aws modules would use.
options:
  _terms:
    description: Regions in order of preference. Empty and null ones are skipped.
    type: list
    elements: str
  profile:
    description:
      - The AWS profile whose configured region is the last resort.
      - Without it, the profile of the environment (E(AWS_PROFILE), E(AWS_DEFAULT_PROFILE)), else C(default).
    type: str
notes:
  - The profile's region is read with botocore when it is installed (the amazon.aws modules need it); without
    botocore only the terms and the environment count.
"""

EXAMPLES = r"""
- name: The region a role of this collection works in
  ansible.builtin.debug:
    msg: "{{ lookup('bastionless.ssm.aws_region', operator_access_region | default(''), bastionless_region | default('')) }}"

- name: The region of a named profile, when nothing else gives one
  ansible.builtin.debug:
    msg: "{{ lookup('bastionless.ssm.aws_region', profile='audit') }}"
"""

RETURN = r"""
_raw:
  description: The region, or an empty string when none is given or configured.
  type: list
  elements: str
"""

import os

from ansible.plugins.lookup import LookupBase

ENVIRONMENT = ("AWS_REGION", "AWS_DEFAULT_REGION", "EC2_REGION")


def _profile_region(profile):
    try:
        import botocore.session
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return ""
    try:
        return botocore.session.Session(profile=profile or None).get_config_variable("region") or ""
    except BotoCoreError:  # a profile that does not exist, a configuration file that cannot be read
        return ""


def resolve(terms, profile=None, environ=None) -> str:
    """The first region of ``terms`` that is not empty, else the environment's, else the profile's, else ""."""
    environ = os.environ if environ is None else environ
    for region in list(terms or []) + [environ.get(name) for name in ENVIRONMENT]:
        region = str(region).strip() if region else ""
        if region:
            return region
    return _profile_region(profile)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        return [resolve(terms, self.get_option("profile"))]
