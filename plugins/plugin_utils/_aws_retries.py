# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""How the collection's plugins retry AWS calls: botocore's own retry modes, checked once and turned into the
``retries`` setting of a botocore ``Config``. The playbooks feed the same two values to every module through
``module_defaults`` (``aws_config``), so a fleet's throttling is met the same way everywhere (docs/reliability.md)."""

from __future__ import annotations

RETRY_MODES = ("standard", "adaptive", "legacy")
DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 10
# More attempts than this would only hide a broken call: botocore's backoff is capped at 20 s an attempt.
MOST_ATTEMPTS = 50


class RetrySettingError(ValueError):
    """A retry setting that botocore would not take, with the fix in the message."""


def retry_settings(mode, max_attempts) -> dict:
    """``{"mode": ..., "total_max_attempts": ...}`` for botocore's ``Config(retries=...)``, or RetrySettingError naming
    the option and what it takes. None means the default."""
    mode = DEFAULT_RETRY_MODE if mode is None or mode == "" else mode
    if not isinstance(mode, str) or mode not in RETRY_MODES:
        raise RetrySettingError(
            f"aws_retry_mode (bastionless_aws_retry_mode) is {mode!r}; use one of {', '.join(RETRY_MODES)} "
            f"(botocore's retry modes; {DEFAULT_RETRY_MODE} when unset)")
    if max_attempts is None or max_attempts == "":
        max_attempts = DEFAULT_MAX_ATTEMPTS
    if isinstance(max_attempts, str) and max_attempts.strip().isdigit():
        max_attempts = int(max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= MOST_ATTEMPTS:
        raise RetrySettingError(
            f"aws_max_attempts (bastionless_aws_max_attempts) is {max_attempts!r}; use a whole number from 1 to "
            f"{MOST_ATTEMPTS}: the attempts of each AWS call, the first one included ({DEFAULT_MAX_ATTEMPTS} when unset)")
    # total_max_attempts counts the first attempt, as AWS_MAX_ATTEMPTS does (botocore's max_attempts would not).
    return {"mode": mode, "total_max_attempts": max_attempts}
