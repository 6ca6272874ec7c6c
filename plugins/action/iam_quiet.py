# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Action plugin of bastionless.ssm.iam_quiet: run one of amazon.aws's IAM role and user modules, as the task would,
and leave out of its result the return values amazon.aws 10 deprecates on every call, with their notices.

amazon.aws 10 calls ``module.deprecate`` at the start of ``iam_role``, ``iam_role_info`` and ``iam_user``, before it
reads any option, about a return value it will stop returning. The collection's roles read none of those values, yet
every ``site.yml`` printed the notices. Here the deprecated values are removed from the result, so that nothing can
come to depend on them, and the notices about exactly those values go with them; every other notice, warning and
value of the module's result is passed on. The task's ``module_defaults`` for the module (``group/amazon.aws.aws``)
apply as they would to the module named in the task itself, as ``ansible.builtin.package`` applies them to the
package manager's module.
"""

from ansible.errors import AnsibleActionFail
from ansible.executor.module_common import _apply_action_arg_defaults
from ansible.plugins.action import ActionBase

# For each module: the notice amazon.aws 10 gives on every call (the start of its text), and the return values the
# notice is about, as (key of the result, key inside it or None for the key itself; a list is read item by item).
DEPRECATED = {
    "amazon.aws.iam_role": (
        "In a release after 2026-05-01 iam_role.assume_role_policy_document_raw will no longer be returned.",
        ("iam_role", "assume_role_policy_document_raw"),
    ),
    "amazon.aws.iam_role_info": (
        "In a release after 2026-05-01 iam_role.assume_role_policy_document_raw will no longer be returned.",
        ("iam_roles", "assume_role_policy_document_raw"),
    ),
    "amazon.aws.iam_user": (
        "The 'iam_user' return key is deprecated and will be replaced by 'user'.",
        ("iam_user", None),
    ),
}


def _notice_text(notice) -> str:
    """The message of a deprecation in a module's result: a dict from the module, or ansible-core's summary."""
    if isinstance(notice, dict):
        return str(notice.get("msg", ""))
    event = getattr(notice, "event", None)
    return str(getattr(event, "msg", "") or "")


def _notice_source(notice) -> str:
    """The collection a deprecation comes from, or "" when it does not say."""
    if isinstance(notice, dict):
        return str(notice.get("collection_name") or "")
    deprecator = getattr(notice, "deprecator", None)
    return str(getattr(deprecator, "resolved_name", "") or "")


def without_deprecated(module: str, result: dict) -> dict:
    """``result`` of ``module`` without the return values amazon.aws deprecates on every call, nor their notices.

    Other deprecations (a notice from another collection, or about an option the task set) are kept, as is every
    other value. A module that is not in DEPRECATED gets its result back unchanged."""
    if module not in DEPRECATED:
        return result
    notice_start, (key, inner) = DEPRECATED[module]
    result = dict(result)
    if inner is None:
        result.pop(key, None)
    elif isinstance(result.get(key), dict):
        result[key] = {name: value for name, value in result[key].items() if name != inner}
    elif isinstance(result.get(key), list):
        result[key] = [{name: value for name, value in item.items() if name != inner} if isinstance(item, dict)
                       else item for item in result[key]]
    notices = result.get("deprecations")
    if isinstance(notices, list):
        kept = [notice for notice in notices
                if not (_notice_text(notice).startswith(notice_start)
                        and _notice_source(notice).split(".")[:2] in (["amazon", "aws"], [""]))]
        if kept:
            result["deprecations"] = kept
        else:
            result.pop("deprecations")
    return result


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("module", "params"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect

        _spec, args = self.validate_argument_spec(argument_spec={
            "module": {"type": "str", "required": True, "choices": sorted(DEPRECATED)},
            "params": {"type": "dict", "required": True},
        })
        module = args["module"]
        context = self._shared_loader_obj.module_loader.find_plugin_with_context(
            module, collection_list=self._task.collections)
        if not context.resolved:
            raise AnsibleActionFail(
                f"bastionless.ssm.iam_quiet: module: {module} is not installed; install the amazon.aws collection "
                "(galaxy.yml names the releases this collection is tested with).")
        module_args = _apply_action_arg_defaults(context.resolved_fqcn, self._task, dict(args["params"]),
                                                 self._templar)
        result.update(self._execute_module(module_name=module, module_args=module_args, task_vars=task_vars))
        return without_deprecated(module, result)
