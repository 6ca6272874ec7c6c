# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""bastionless.ssm.iam_quiet leaves out of an amazon.aws IAM module's result exactly the return values amazon.aws 10
deprecates on every call and the notices about them; everything else passes (the lab runs it for real in
tests/integration/test_role_operator_access.py and through every role that calls it)."""

from unittest import mock

import pytest

from ansible.errors import AnsibleActionFail
from ansible.module_utils._internal import _messages
from ansible.playbook.task import Task

from ansible_collections.bastionless.ssm.plugins.action import iam_quiet
from ansible_collections.bastionless.ssm.plugins.action.iam_quiet import without_deprecated

RAW = ("In a release after 2026-05-01 iam_role.assume_role_policy_document_raw will no longer be returned.  Since "
       "release 8.0.0 assume_role_policy_document has been returned with the same format as "
       "iam_role.assume_role_policy_document_raw")
USER = "The 'iam_user' return key is deprecated and will be replaced by 'user'. Both values are returned for now."
OTHER = "In a release after 2026-05-01 the 'create_instance_profile' option will be removed."
TRUST = {"Version": "2012-10-17", "Statement": []}


def summary(msg, deprecator="amazon.aws.iam_role"):
    """A notice as ansible-core 2.19 hands it to an action plugin."""
    return _messages.DeprecationSummary(event=_messages.Event(msg=msg), date="2026-05-01",
                                        deprecator=_messages.PluginInfo(resolved_name=deprecator, type=None))


def test_iam_role_loses_the_raw_trust_policy_and_its_notice_only():
    result = {"changed": True, "iam_role": {"role_name": "r", "assume_role_policy_document": TRUST,
                                            "assume_role_policy_document_raw": TRUST},
              "deprecations": [summary(RAW), summary(OTHER)]}
    quiet = without_deprecated("amazon.aws.iam_role", result)
    assert quiet["iam_role"] == {"role_name": "r", "assume_role_policy_document": TRUST}
    assert [d.event.msg for d in quiet["deprecations"]] == [OTHER]  # a notice about an option the task left out
    assert result["iam_role"]["assume_role_policy_document_raw"] == TRUST  # the module's own result is not changed


def test_iam_role_info_each_role_loses_the_raw_trust_policy_and_the_notice_goes():
    roles = [{"role_name": n, "assume_role_policy_document": TRUST, "assume_role_policy_document_raw": TRUST}
             for n in ("a", "b")]
    quiet = without_deprecated("amazon.aws.iam_role_info", {"changed": False, "iam_roles": roles,
                                                            "deprecations": [{"msg": RAW, "date": "2026-05-01",
                                                                              "collection_name": "amazon.aws"}]})
    assert quiet == {"changed": False, "iam_roles": [{"role_name": "a", "assume_role_policy_document": TRUST},
                                                     {"role_name": "b", "assume_role_policy_document": TRUST}]}


def test_iam_user_loses_the_iam_user_key_and_keeps_user():
    user = {"user_name": "alice", "arn": "arn:aws:iam::123456789012:user/alice"}
    quiet = without_deprecated("amazon.aws.iam_user", {"changed": False, "user": user, "iam_user": {"user": user},
                                                       "deprecations": [summary(USER, "amazon.aws")]})
    assert quiet == {"changed": False, "user": user}


def test_the_same_words_from_another_collection_and_other_modules_pass_unchanged():
    notice = summary(USER, "someone.else")
    assert without_deprecated("amazon.aws.iam_user", {"deprecations": [notice]}) == {"deprecations": [notice]}
    result = {"iam_role": {"assume_role_policy_document_raw": TRUST}, "deprecations": [summary(RAW)]}
    assert without_deprecated("amazon.aws.iam_policy", result) is result


def test_a_failed_module_keeps_its_message():
    result = {"failed": True, "msg": "NoSuchEntity", "deprecations": [summary(RAW)]}
    assert without_deprecated("amazon.aws.iam_role", result) == {"failed": True, "msg": "NoSuchEntity"}


def action(args, installed=True):
    task = Task()
    task.args = dict(args)
    task.action = "bastionless.ssm.iam_quiet"
    loader = mock.MagicMock()
    found = mock.Mock(resolved=installed, resolved_fqcn=args.get("module"))
    loader.module_loader.find_plugin_with_context.return_value = found
    plugin = iam_quiet.ActionModule(task, mock.MagicMock(), mock.MagicMock(), None, None, None)
    plugin._shared_loader_obj = loader  # ansible-core's own loaders would look for amazon.aws beside the tests
    plugin._execute_module = mock.MagicMock(return_value={"changed": False, "iam_roles": [],
                                                          "deprecations": [summary(RAW)]})
    return plugin


def test_the_action_runs_the_module_named_with_its_params_and_returns_the_quiet_result(monkeypatch):
    monkeypatch.setattr(iam_quiet, "_apply_action_arg_defaults",
                        lambda fqcn, task, args, templar: dict({"aws_config": {"retries": fqcn}}, **args))
    plugin = action({"module": "amazon.aws.iam_role_info", "params": {"name": "r"}})
    assert plugin.run(task_vars={}) == {"changed": False, "iam_roles": []}
    kwargs = plugin._execute_module.call_args.kwargs
    assert kwargs["module_name"] == "amazon.aws.iam_role_info"
    assert kwargs["module_args"] == {"name": "r", "aws_config": {"retries": "amazon.aws.iam_role_info"}}


@pytest.mark.parametrize("args, message", [
    ({"module": "amazon.aws.iam_role", "params": {}, "unused": 1}, "Invalid options for bastionless.ssm.iam_quiet: unused"),
    ({"module": "amazon.aws.iam_policy", "params": {}}, "value of module must be one of: amazon.aws.iam_role, "
                                                        "amazon.aws.iam_role_info, amazon.aws.iam_user"),
    ({"module": "amazon.aws.iam_role"}, "missing required arguments: params"),
])
def test_bad_input_names_the_option(args, message):
    with pytest.raises(AnsibleActionFail) as failed:
        action(args).run(task_vars={})
    assert message in str(failed.value)


def test_a_missing_amazon_aws_is_named_with_the_fix():
    plugin = action({"module": "amazon.aws.iam_user", "params": {"name": "alice"}}, installed=False)
    with pytest.raises(AnsibleActionFail) as failed:
        plugin.run(task_vars={})
    assert "module: amazon.aws.iam_user is not installed; install the amazon.aws collection" in str(failed.value)
    plugin._execute_module.assert_not_called()
