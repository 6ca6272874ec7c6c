"""bastionless.ssm.agent over Session Manager on lab nodes: apt on Debian, enable at boot, recovery by reboot.

The nodes' tasks run over bastionless.ssm.session (apt over a persistent session, the agent restarted under it, and a
reboot that ends it); test_site.py runs the role over amazon.aws.aws_ssm too, in site.yml."""

import json
import os
import shutil

import pytest
from ansible_cli import ROOT, run
from roles_helpers import run_command
from session_connection import session_connection  # noqa: F401 pylint: disable=unused-import
from ssm_lab.harness.testing import running_lab, wait_until
from ssm_lab.nodes import agent_package

INVENTORY = "inventories/lab"
# The recovery test needs the node whose agent stopped in the inventory: managed_nodes with ping_status: all.
PLAYBOOK = "tests/integration/playbooks/agent.yml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("agent"), "--nodes", "2", "--provisioned",
                     "--platform", "debian12,al2023") as lab:
        lab.client("s3").create_bucket(Bucket="bastionless-lab-transfer")
        yield lab


def _inventory_with_offline_nodes(tmp_path):
    """inventories/lab (its group_vars and lab.managed_nodes.yml) listing offline nodes too, as docs/agent.md says."""
    directory = tmp_path / "inventory"
    shutil.copytree(os.path.join(ROOT, INVENTORY), directory)
    config = directory / "lab.managed_nodes.yml"
    config.write_text(config.read_text(encoding="utf-8") + "ping_status: all\n", encoding="utf-8")
    return str(directory)


def _nodes(lab):
    return {n["platform"]: n["id"] for n in json.loads(lab.cli("status", "--json").stdout)["nodes"]}


def _info(lab, node):
    listed = lab.client("ssm").describe_instance_information()["InstanceInformationList"]
    return next(i for i in listed if i["InstanceId"] == node)


def _shell(lab, node, command):
    return run_command(lab, node, command)


def _facts(output, node):
    marker = f"{node}: amazon-ssm-agent "
    return next(line for line in output.splitlines() if marker in line)


def test_debian_node_is_upgraded_with_apt_to_the_minimum_version(lab):
    nodes = _nodes(lab)
    debian = nodes["debian12"]
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", debian,
                        "-e", f"agent_minimum_version={agent_package.AGENT_LATEST}")
    assert recap[debian]["failed"] == 0 and recap[debian]["changed"] >= 1, output
    assert "Install or upgrade the agent from AWS's Debian package (apt)" in output
    assert f"amazon-ssm-agent {agent_package.AGENT_LATEST} (deb, upgraded from 3.3.1142.0)" in _facts(output, debian)
    assert f"amazon-ssm-agent\t{agent_package.AGENT_LATEST}-1" in _shell(lab, debian, "dpkg-query -W amazon-ssm-agent")
    wait_until(lambda: _info(lab, debian)["AgentVersion"] == agent_package.AGENT_LATEST,
               what="the new agent version in SSM")
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", debian,
                        "-e", f"agent_minimum_version={agent_package.AGENT_LATEST}")
    assert recap[debian]["changed"] == 0, output


def test_a_version_above_what_is_published_fails_naming_the_fix(lab):
    debian = _nodes(lab)["debian12"]
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", debian,
                        "-e", "agent_minimum_version=9.9.9.9", check=False)
    assert recap[debian]["failed"] == 1
    assert "below agent_minimum_version 9.9.9.9" in output and "Lower agent_minimum_version" in output


def test_bad_input_fails_before_any_change(lab):
    debian = _nodes(lab)["debian12"]
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", debian,
                        "-e", "agent_minimum_version=latest", "-e", "agent_proxy=proxy:3128", check=False)
    assert recap[debian]["failed"] == 1 and recap[debian]["changed"] == 0
    assert "agent_minimum_version: latest is not a version" in output
    assert "agent_proxy: proxy:3128 is not an http:// or https:// URL" in output


def test_a_disabled_agent_is_enabled_again_and_check_mode_predicts_it(lab):
    node = _nodes(lab)["al2023"]
    _shell(lab, node, "systemctl disable amazon-ssm-agent")
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", node, "--check")
    assert recap[node]["changed"] == 1, output
    assert "disabled" in _shell(lab, node, "systemctl is-enabled amazon-ssm-agent || true")
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", node)
    assert recap[node]["changed"] == 1, output
    assert "enabled" in _shell(lab, node, "systemctl is-enabled amazon-ssm-agent")
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", node)
    assert recap[node]["changed"] == 0, output


def test_configuration_and_proxy_restart_the_agent_once(lab):
    node = _nodes(lab)["al2023"]
    extra = json.dumps({"agent_config": {"Mds": {"CommandWorkersLimit": 7}}, "agent_log_level": "debug",
                        "agent_proxy": "http://proxy.internal:3128"})
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", node, "-e", extra)
    assert recap[node]["failed"] == 0 and "RUNNING HANDLER [bastionless.ssm.agent : Restart amazon-ssm-agent]" in output
    files = _shell(lab, node, "cat /etc/amazon/ssm/amazon-ssm-agent.json "
                              "/etc/systemd/system/amazon-ssm-agent.service.d/bastionless-proxy.conf; "
                              "grep -o 'minlevel=\"debug\"' /etc/amazon/ssm/seelog.xml")
    assert '"CommandWorkersLimit": 7' in files and 'https_proxy=http://proxy.internal:3128' in files
    assert 'no_proxy=169.254.169.254' in files and 'minlevel="debug"' in files
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", node, "-e", extra)
    assert recap[node]["changed"] == 0 and "RUNNING HANDLER" not in output, output
    run(lab, "ansible-playbook", "-i", INVENTORY, PLAYBOOK, "--limit", node)  # drop the proxy again


def test_an_agent_stopped_through_run_command_is_brought_back_by_a_reboot(lab, tmp_path):
    node = _nodes(lab)["al2023"]
    inventory = _inventory_with_offline_nodes(tmp_path)
    ssm = lab.client("ssm")
    ssm.send_command(InstanceIds=[node], DocumentName="AWS-RunShellScript",
                     Parameters={"commands": ["systemctl stop amazon-ssm-agent"]})
    wait_until(lambda: _info(lab, node)["PingStatus"] == "ConnectionLost", what="the agent to stop")
    output, recap = run(lab, "ansible-playbook", "-i", inventory, PLAYBOOK, "--limit", node,
                        "-e", "agent_probe_timeout=5", check=False)
    assert recap[node]["failed"] == 1
    assert "set agent_recover_offline: true to reboot the instance" in output
    output, recap = run(lab, "ansible-playbook", "-i", inventory, PLAYBOOK, "--limit", node,
                        "-e", "agent_probe_timeout=5", "-e", "agent_recover_offline=true")
    assert recap[node]["failed"] == 0 and "rebooted to recover" in _facts(output, node), output
    assert _info(lab, node)["PingStatus"] == "Online"
