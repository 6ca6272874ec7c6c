# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The action plugins of the controller-only modules hand their data to the module as internal options of that one
module run, and leave the controller's environment as it was (a later task must not see it)."""

import os
from unittest import mock

import pytest

from ansible import constants as C
from ansible.playbook.task import Task

from ansible_collections.bastionless.ssm.plugins.action import instance_connect_key
from ansible_collections.bastionless.ssm.plugins.action import ssm_tunnel


class Connection:
    def __init__(self, transport):
        self.transport = transport
        self._shell = mock.MagicMock()


def action(plugin, args, transport="local"):
    task = Task()
    task.args = dict(args)
    task.action = f"bastionless.ssm.{plugin.__name__.rsplit('.', 1)[-1]}"
    module = plugin.ActionModule(task, Connection(transport), mock.MagicMock(), None, None, None)
    module._execute_module = mock.MagicMock(return_value={"changed": False})
    return module


def run(module):
    before = dict(os.environ)
    result = module.run(task_vars={})
    assert dict(os.environ) == before
    return result


def test_instance_connect_key_gets_the_run_temporary_directory_as_an_internal_option():
    module = action(instance_connect_key, {"key_type": "ed25519"})
    assert run(module) == {"changed": False}
    kwargs = module._execute_module.call_args.kwargs
    assert kwargs["module_args"] == {"key_type": "ed25519", "_key_parent": str(C.DEFAULT_LOCAL_TMP)}
    assert module._task.args == {"key_type": "ed25519"}


def test_ssm_tunnel_gets_the_controller_process_as_internal_options():
    module = action(ssm_tunnel, {"target": "i-0123456789abcdef0", "remote_port": 22})
    run(module)
    args = module._execute_module.call_args.kwargs["module_args"]
    assert args["_controller_pid"] == os.getppid()
    assert args["_controller_start"] == ssm_tunnel.process_start(os.getppid())
    assert os.path.isfile(os.path.join(args["_native_client"], "_port_forward.py"))  # the native transport's code
    given = {k: v for k, v in args.items() if not k.startswith("_")}
    assert given == {"target": "i-0123456789abcdef0", "remote_port": 22}


@pytest.mark.parametrize("plugin", [instance_connect_key, ssm_tunnel])
def test_refused_over_another_connection_without_running_the_module(plugin):
    module = action(plugin, {}, transport="amazon.aws.aws_ssm")
    result = run(module)
    assert result["failed"] is True and "delegate_to: localhost" in result["msg"]
    module._execute_module.assert_not_called()
