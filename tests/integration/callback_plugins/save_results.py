# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A test-only callback: what ansible_cli.save_task put aside with ansible.builtin.set_stats, written as JSON files
when the run ends. Each key of the run's custom stats is one save: {"path": where, "value": what}. With
BASTIONLESS_TEST_FAILURES set to a path, also every failed (not ignored) or unreachable task result there, by host
(ansible_cli.run_cases: many cases, each a host, in one run).

A set_stats task runs in the controller's worker with no module process, where a copy task costs two module
runs (stat and copy): about a second of CPU per saved result."""

from __future__ import annotations

import json
import os

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: save_results
type: aggregate
short_description: Write the results tests put aside to JSON files
description:
  - Test tooling of bastionless.ssm, not part of the collection.
"""

PREFIX = "bastionless_test_save_"
FAILURES = "BASTIONLESS_TEST_FAILURES"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "save_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._failures: dict = {}

    def _failed(self, result, what: str) -> None:
        outcome = result._result  # pylint: disable=protected-access
        self._failures.setdefault(result._host.get_name(), []).append(  # pylint: disable=protected-access
            {"task": result._task.get_name(), "outcome": what,  # pylint: disable=protected-access
             "msg": str(outcome.get("msg", "")), "stderr": str(outcome.get("stderr", ""))})

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._failed(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._failed(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        if os.environ.get(FAILURES):
            with open(os.environ[FAILURES], "w", encoding="utf-8") as handle:
                json.dump(self._failures, handle, cls=AnsibleJSONEncoder)
        for key, saved in (stats.custom.get("_run") or {}).items():
            if key.startswith(PREFIX):
                with open(saved["path"], "w", encoding="utf-8") as handle:
                    json.dump(saved["value"], handle, cls=AnsibleJSONEncoder)
