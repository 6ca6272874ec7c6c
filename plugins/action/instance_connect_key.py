# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of bastionless.ssm.instance_connect_key: make sure the module runs on the controller, and tell it
where the run's temporary directory is, so that a key pair made without key_dir goes away with the run.

ansible-playbook creates its local temporary directory (C.DEFAULT_LOCAL_TMP, mode 0700) when it starts and deletes
it when it exits, also after a failure. The module runs a few processes further down and cannot know that path,
so the action tells it, as the module's internal option _key_parent added to the task's arguments (as async_status
gets _async_dir from its action): it reaches only this module run, and the worker's environment is left alone.
"""

from ansible import constants as C
from ansible.plugins.action import ActionBase

from ansible_collections.bastionless.ssm.plugins.plugin_utils._controller_action import not_on_controller


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect

        error = not_on_controller(self._connection, "bastionless.ssm.instance_connect_key makes the key on the controller")
        if error:
            result.update(failed=True, msg=error)
            return result

        module_args = dict(self._task.args, _key_parent=str(C.DEFAULT_LOCAL_TMP))
        result.update(self._execute_module(module_name="bastionless.ssm.instance_connect_key", module_args=module_args,
                                           task_vars=task_vars))
        return result
