# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The retry setting the playbooks (aws_retry_config) and the plugins (aws_retry_mode, aws_max_attempts) share, and
that botocore takes every value it lets through."""

import pytest
from ansible.errors import AnsibleFilterError
from botocore.config import Config

from ansible_collections.bastionless.ssm.plugins.filter.aws_retries import aws_retry_config
from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import RetrySettingError
from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import retry_settings


@pytest.mark.parametrize("mode, attempts, expected", [
    (None, None, {"mode": "standard", "total_max_attempts": 10}),
    ("", "", {"mode": "standard", "total_max_attempts": 10}),
    ("adaptive", 20, {"mode": "adaptive", "total_max_attempts": 20}),
    ("legacy", "5", {"mode": "legacy", "total_max_attempts": 5}),
    ("standard", 1, {"mode": "standard", "total_max_attempts": 1}),
    ("standard", 50, {"mode": "standard", "total_max_attempts": 50}),
])
def test_settings_botocore_takes(mode, attempts, expected):
    assert retry_settings(mode, attempts) == expected
    assert Config(retries=expected).retries == expected
    assert aws_retry_config(mode, attempts) == {"retries": expected}


@pytest.mark.parametrize("mode, attempts, named, fix", [
    ("fast", None, "aws_retry_mode (bastionless_aws_retry_mode) is 'fast'", "standard, adaptive, legacy"),
    ("Standard", None, "aws_retry_mode", "standard, adaptive, legacy"),
    (3, None, "aws_retry_mode", "standard, adaptive, legacy"),
    (None, 0, "aws_max_attempts (bastionless_aws_max_attempts) is 0", "from 1 to 50"),
    (None, 51, "is 51", "from 1 to 50"),
    (None, "ten", "is 'ten'", "whole number"),
    (None, 2.5, "is 2.5", "whole number"),
    (None, True, "is True", "whole number"),
])
def test_a_bad_setting_names_the_variable_and_the_fix(mode, attempts, named, fix):
    with pytest.raises(RetrySettingError) as raised:
        retry_settings(mode, attempts)
    assert named in str(raised.value) and fix in str(raised.value)
    with pytest.raises(AnsibleFilterError, match="bastionless_aws_"):
        aws_retry_config(mode, attempts)
