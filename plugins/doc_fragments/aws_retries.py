# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # aws_retry_mode and aws_max_attempts of the plugins that call AWS from the controller (the managed_nodes
    # inventory, the session connection). The playbooks give the modules the same values through module_defaults.
    DOCUMENTATION = r"""
options:
  aws_retry_mode:
    description:
      - How botocore retries this plugin's AWS calls when AWS throttles them or fails for a moment
        (U(https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html)).
      - V(standard) backs off exponentially with jitter; V(adaptive) also slows the client down while it is
        throttled; V(legacy) is botocore's old policy.
      - The playbooks of this collection pass the same setting (the variable C(bastionless_aws_retry_mode)) to every
        module they run; see the collection's C(docs/reliability.md).
    type: str
    choices: [ 'standard', 'adaptive', 'legacy' ]
    default: standard
    env:
      - name: BASTIONLESS_AWS_RETRY_MODE
  aws_max_attempts:
    description:
      - How many times each AWS call is tried before the plugin gives up, the first attempt included (1 to 50).
      - The default rides out the throttling a large account meets; botocore's own default, 3, does not.
    type: int
    default: 10
    env:
      - name: BASTIONLESS_AWS_MAX_ATTEMPTS
"""
