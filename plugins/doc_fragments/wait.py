# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # wait and wait_timeout of the modules whose AWS request finishes later than the call that makes it
    # (ssm_association, ssm_command, ssm_session, vpc_endpoint). A module states its own wait_timeout default
    # (the option's other keys come from here) and says in its description what it waits for.
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Wait until AWS has done what the module asked for, as the module's description says, before returning.
      - With V(false), return as soon as AWS has accepted the request.
    type: bool
    default: true
  wait_timeout:
    description:
      - The most seconds to wait with O(wait). When they pass, the task fails; AWS goes on with what it was asked
        to do.
    type: int
"""
