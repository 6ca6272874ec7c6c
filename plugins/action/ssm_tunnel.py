# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of bastionless.ssm.ssm_tunnel: make sure the module runs on the controller, and tell it which
Ansible process to watch, so that the tunnel closes when that process exits.

The action runs in a worker process that ansible-playbook (or ansible) forks for the task; the worker's parent
is that main process, which lives for the whole run. The module runs a few processes further down (the local
connection's shell, AnsiballZ) and cannot tell which of its ancestors that is, so the action tells it, as the
module's internal options _controller_pid and _controller_start added to the task's arguments (as async_status gets
_async_dir from its action): they reach only this module run, and the worker's environment is left alone.

It also names the collection's plugin_utils directory (internal option _native_client): the native transport's port
forwarder and data channel client live there, and a module, which Ansible ships with its module_utils only, loads
them from that path.
"""

import os

from ansible.plugins.action import ActionBase

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _controller_action
from ansible_collections.bastionless.ssm.plugins.plugin_utils._controller_action import not_on_controller


def process_start(pid):
    """The start time of a process in clock ticks since boot (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect

        error = not_on_controller(self._connection, "bastionless.ssm.ssm_tunnel runs on the controller")
        if error:
            result.update(failed=True, msg=error)
            return result

        controller = os.getppid()
        module_args = dict(self._task.args, _controller_pid=controller, _controller_start=process_start(controller),
                           _native_client=os.path.dirname(os.path.abspath(_controller_action.__file__)))
        result.update(self._execute_module(module_name="bastionless.ssm.ssm_tunnel", module_args=module_args,
                                           task_vars=task_vars))
        return result
