# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The botocore configuration every module of the playbooks gets through ``module_defaults`` (``aws_config``): the
retry mode and attempts of bastionless_aws_retry_mode and bastionless_aws_max_attempts, checked by the rule the
plugins use (plugin_utils/_aws_retries.py). Documentation: aws_retry_config.yml beside this file."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import RetrySettingError
from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import retry_settings


def aws_retry_config(mode=None, max_attempts=None):
    """``{"retries": {"mode": ..., "total_max_attempts": ...}}``, the defaults for what is None."""
    try:
        return {"retries": retry_settings(mode, max_attempts)}
    except RetrySettingError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    """The AWS retry filter."""

    def filters(self):
        return {"aws_retry_config": aws_retry_config}
