"""module_utils/_task_warnings.py: a module's warning goes to ansible-core's own record of warnings, the one
AnsibleModule.warn writes and exit_json reads (the end to end check, a task that warns without a deprecation notice,
is in tests/integration/test_module_ssm_association.py)."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common import warnings as ansible_warnings

from ansible_collections.bastionless.ssm.plugins.module_utils import _task_warnings


def test_a_warning_is_recorded_by_ansible_cores_warn_as_ansible_module_records_it(monkeypatch):
    assert _task_warnings._warn is ansible_warnings.warn
    seen = []
    monkeypatch.setattr(_task_warnings, "_warn", seen.append)
    _task_warnings.warn("the command matched no managed node; it ran nowhere.")
    assert seen == ["the command matched no managed node; it ran nowhere."]
    assert "warn" in AnsibleModule.warn.__code__.co_names  # AnsibleModule.warn records through the same function
