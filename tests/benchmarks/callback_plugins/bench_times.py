"""A callback for the benchmarks: when each host's result of each task came, written as JSON at the end of the run.

Enabled by tests/benchmarks/transport.py (``ANSIBLE_CALLBACK_PLUGINS`` and ``ANSIBLE_CALLBACKS_ENABLED``), which
reads the file named by ``BENCH_TIMES_FILE``: ``{"start": t0, "tasks": [{"name", "start", "results": {host: t}}]}``,
times in seconds of ``time.monotonic()``. Not part of the collection."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bench_times
    type: aggregate
    short_description: when each host's result of each task came (benchmarks only)
    description: Writes the time of each task's start and of each host's result to BENCH_TIMES_FILE.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._start = time.monotonic()
        self._tasks: list[dict] = []

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._tasks.append({"name": task.get_name(), "start": time.monotonic(), "results": {}})

    def _result(self, result, *args, **kwargs) -> None:
        if self._tasks:
            self._tasks[-1]["results"].setdefault(result._host.get_name(), time.monotonic())

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_unreachable = v2_runner_on_skipped = _result

    def v2_playbook_on_stats(self, stats) -> None:
        path = os.environ.get("BENCH_TIMES_FILE")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"start": self._start, "tasks": self._tasks}, handle)
