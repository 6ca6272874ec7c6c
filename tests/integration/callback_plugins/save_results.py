# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A test-only callback: what ansible_cli.save_task put aside with ansible.builtin.set_stats, written as JSON files
when the run ends. Each key of the run's custom stats is one save: {"path": where, "value": what}.

A set_stats task runs in the controller's worker with no module process, where a copy task costs two module
runs (stat and copy): about a second of CPU per saved result."""

from __future__ import annotations

import json

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


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "save_results"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        for key, saved in (stats.custom.get("_run") or {}).items():
            if key.startswith(PREFIX):
                with open(saved["path"], "w", encoding="utf-8") as handle:
                    json.dump(saved["value"], handle, cls=AnsibleJSONEncoder)
