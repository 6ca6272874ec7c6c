# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The name rules the operator_access and run_as_users filters check the same inputs with (a Run As mapping is
an IAM principal's name and a Linux user's)."""

from __future__ import annotations

import re

# IAM user, group and role names.
IAM_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
# What Linux accepts as a user or group name (useradd's default NAME_REGEX, without the trailing $ of machine
# accounts), and the rule in words.
LINUX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
LINUX_NAME_RULE = "lower-case letters, digits, _ and -, starting with a letter or _, at most 32 characters"
