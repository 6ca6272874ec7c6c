# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The collection's one lookup of session-manager-plugin (the session connection, ssm_tunnel, ssm_preflight)."""

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _plugin_path


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "bin" / "session-manager-plugin"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def no_default(tmp_path, monkeypatch):
    monkeypatch.setattr(_plugin_path, "DEFAULT_PATH", str(tmp_path / "usr-local-bin" / "session-manager-plugin"))


def test_the_configured_path_comes_first_and_is_taken_as_given(plugin, tmp_path, no_default):
    other = tmp_path / "other"
    environ = {"AWS_SESSION_MANAGER_PLUGIN": str(other), "PATH": str(plugin.parent)}
    assert _plugin_path.find(str(plugin), environ) == (str(plugin), f"the plugin option: {plugin}")
    # Not executable: None, never a fallback to the one on PATH.
    assert _plugin_path.find(str(other), environ) == (None, f"the plugin option: {other}")


def test_then_the_environment_variable(plugin, tmp_path, no_default):
    assert _plugin_path.find(None, {"AWS_SESSION_MANAGER_PLUGIN": str(plugin)}) == (
        str(plugin), f"AWS_SESSION_MANAGER_PLUGIN: {plugin}")
    plugin.chmod(0o644)
    assert _plugin_path.find("", {"AWS_SESSION_MANAGER_PLUGIN": str(plugin), "PATH": str(plugin.parent)})[0] is None


def test_then_usr_local_bin_then_path(plugin, tmp_path, monkeypatch):
    monkeypatch.setattr(_plugin_path, "DEFAULT_PATH", str(plugin))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "session-manager-plugin").write_text("#!/bin/sh\n")
    (elsewhere / "session-manager-plugin").chmod(0o755)
    found, looked = _plugin_path.find(None, {"PATH": str(elsewhere)})
    assert found == str(plugin) and looked == f"{plugin}, then session-manager-plugin on PATH ({elsewhere})"
    monkeypatch.setattr(_plugin_path, "DEFAULT_PATH", str(tmp_path / "nowhere"))
    assert _plugin_path.find(None, {"PATH": str(elsewhere)})[0] == str(elsewhere / "session-manager-plugin")
    assert _plugin_path.find(None, {"PATH": str(tmp_path / "empty")})[0] is None


# ssh_over_ssm's ProxyCommand script runs alone under ssh (it cannot import module_utils): its own lookup must find
# the same plugin in every case above.
def _proxy():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "ssh_over_ssm", "files",
                        "ssm_ssh_proxy.py")
    spec = importlib.util.spec_from_file_location("ssm_ssh_proxy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", ["configured", "configured-not-executable", "environment",
                                  "environment-not-executable", "default", "path", "nowhere"])
def test_the_ssh_proxy_looks_in_the_same_order(plugin, tmp_path, monkeypatch, case):
    proxy = _proxy()
    default = tmp_path / "usr-local-bin" / "session-manager-plugin"
    monkeypatch.setattr(_plugin_path, "DEFAULT_PATH", str(default))
    monkeypatch.setattr(proxy, "PLUGIN_DEFAULT_PATH", str(default))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "session-manager-plugin").write_text("#!/bin/sh\n")
    (elsewhere / "session-manager-plugin").chmod(0o755)
    configured, environ = None, {"PATH": str(elsewhere)}
    if case.startswith("configured"):
        configured = str(plugin if case == "configured" else tmp_path / "missing")
        environ["AWS_SESSION_MANAGER_PLUGIN"] = str(elsewhere / "session-manager-plugin")
    elif case.startswith("environment"):
        environ["AWS_SESSION_MANAGER_PLUGIN"] = str(plugin if case == "environment" else tmp_path / "missing")
    elif case == "default":
        default.parent.mkdir()
        default.write_text("#!/bin/sh\n")
        default.chmod(0o755)
    elif case == "nowhere":
        environ["PATH"] = str(tmp_path / "empty")
    expected = {"configured": str(plugin), "environment": str(plugin), "default": str(default),
                "path": str(elsewhere / "session-manager-plugin")}.get(case)
    assert _plugin_path.find(configured, environ)[0] == expected
    assert proxy.find_plugin(configured, environ)[0] == expected
