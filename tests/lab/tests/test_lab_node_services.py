"""A node's service manager and agent package: systemctl in the node drives the lab's agent, a reboot starts it
only when its unit is enabled, and Debian-family nodes carry the agent as a dpkg package that apt can upgrade
from the lab's copy of AWS's distribution bucket."""

from __future__ import annotations

import urllib.request

import pytest
from labhelpers import wait_until
from ssm_lab.nodes import agent_package


@pytest.fixture(scope="module")
def lab(start_lab):
    with start_lab("services-lab", "--nodes", "2", "--provisioned", "--platform", "debian12,al2023") as lab:
        lab.wait_all_online()
        yield lab


def _info(lab, node_id: str) -> dict:
    for item in lab.ssm.describe_instance_information()["InstanceInformationList"]:
        if item["InstanceId"] == node_id:
            return item
    raise AssertionError(f"{node_id} is not registered")


def _by_platform(lab, name: str) -> str:
    return next(n["id"] for n in lab.admin("nodes")["nodes"] if n["platform"] == name)


def test_debian_node_has_the_agent_as_a_dpkg_package(lab):
    node = _by_platform(lab, "debian12")
    out = lab.run_ok(node, "dpkg-query -W -f='${Version}' amazon-ssm-agent; echo",
                     "systemctl is-active amazon-ssm-agent", "systemctl is-enabled amazon-ssm-agent",
                     "amazon-ssm-agent --version", ". /etc/os-release; echo $ID")
    version, active, enabled, program, os_id = out.split("\n")[:5]
    info = _info(lab, node)
    assert version == info["AgentVersion"] + "-1"
    assert (active, enabled, os_id) == ("active", "enabled", "debian")
    assert program == f"SSM Agent version: {info['AgentVersion']}"
    assert info["PlatformName"] == "Debian GNU/Linux" and info["IsLatestVersion"] is False


def test_amazon_linux_node_has_the_agent_preinstalled_without_dpkg(lab):
    node = _by_platform(lab, "al2023")
    invocation = lab.run(node, "dpkg-query -W amazon-ssm-agent")
    assert invocation["Status"] == "Failed"
    assert "no packages found matching amazon-ssm-agent" in invocation["StandardErrorContent"]
    assert lab.run_ok(node, "systemctl is-enabled amazon-ssm-agent").strip() == "enabled"


def test_systemctl_refuses_to_start_a_unit_the_lab_cannot_run(lab):
    node = _by_platform(lab, "al2023")
    unit = "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/sleep 1000\n[Install]\nWantedBy=multi-user.target\n"
    lab.run_ok(node, f"printf '{unit}' > /etc/systemd/system/demo.service", "systemctl enable demo")
    assert lab.run_ok(node, "systemctl is-enabled demo").strip() == "enabled"
    invocation = lab.run(node, "systemctl start demo.service")
    assert invocation["Status"] == "Failed"
    assert "runs no process for demo.service" in invocation["StandardErrorContent"]
    assert lab.run(node, "systemctl start nothing-here")["StandardErrorContent"].strip() == (
        "Failed to start nothing-here.service: Unit nothing-here.service not found.")


def test_stop_through_run_command_then_reboot_brings_an_enabled_agent_back(lab):
    node = _by_platform(lab, "al2023")
    lab.send([node], ["systemctl stop amazon-ssm-agent"])
    assert lab.wait_not_online(node) == "ConnectionLost"
    lab.ec2.reboot_instances(InstanceIds=[node])
    lab.wait_online(node, timeout=30)


def test_a_disabled_agent_stays_down_after_a_reboot(lab):
    node = _by_platform(lab, "al2023")
    lab.wait_online(node, timeout=30)
    lab.send([node], ["systemctl disable --now amazon-ssm-agent"])
    assert lab.wait_not_online(node) == "ConnectionLost"
    lab.ec2.reboot_instances(InstanceIds=[node])
    boot = lab.admin(f"nodes/{node}")["boot"]
    wait_until(lambda: lab.admin(f"nodes/{node}")["booted"] == boot, timeout=15, what="the reboot to finish")
    assert lab.admin(f"nodes/{node}")["agent_wanted"] is False
    assert lab.ping_status(node) == "ConnectionLost"
    # What an operator does next on AWS (user data, serial console): enable it and boot again.
    lab.cli("agent", "start", node)
    lab.wait_online(node, timeout=30)
    lab.run_ok(node, "systemctl enable amazon-ssm-agent")


def test_distribution_bucket_serves_the_latest_package(lab):
    url = f"{lab.endpoint}/amazon-ssm-{lab.region}/{agent_package.DEB_PATH}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read(8) == b"!<arch>\n"
    version_url = f"{lab.endpoint}/amazon-ssm-{lab.region}/{agent_package.VERSION_PATH}"
    with urllib.request.urlopen(version_url, timeout=10) as r:
        assert r.read().decode() == agent_package.AGENT_LATEST


def test_upgrading_the_package_restarts_the_agent_without_ending_sessions_and_reports_the_new_version(lab):
    node = _by_platform(lab, "debian12")
    url = f"{lab.endpoint}/amazon-ssm-{lab.region}/{agent_package.DEB_PATH}"
    out = lab.run_ok(node, f"curl -sSf -o /tmp/agent.deb {url}", "dpkg -i /tmp/agent.deb >/dev/null",
                     "echo still-here")
    assert out.strip().endswith("still-here")  # the command outlived the agent's restart
    wait_until(lambda: _info(lab, node)["AgentVersion"] == agent_package.AGENT_LATEST, timeout=15,
               what="the restarted agent to report the new version")
    assert _info(lab, node)["IsLatestVersion"] is True


def test_acls_work_in_a_node_as_ansible_needs_them_to_become_an_unprivileged_user(lab):
    # Ansible hands its temporary files to an unprivileged become user with setfacl (the acl package, which EC2's
    # AMIs ship): the node has it, and the ACL it sets lets that user, and only that user, read a file in a
    # directory of someone else's.
    node = _by_platform(lab, "al2023")
    out = lab.run_ok(node, "install -d -m 0700 /tmp/acl-test",
                     "echo secret > /tmp/acl-test/file && chmod 0600 /tmp/acl-test/file",
                     "setfacl -m u:nobody:x /tmp/acl-test && setfacl -m u:nobody:r /tmp/acl-test/file",
                     "getfacl -cp /tmp/acl-test/file | grep '^user:nobody:'",
                     "setpriv --reuid=nobody --regid=nogroup --clear-groups cat /tmp/acl-test/file",
                     "setpriv --reuid=daemon --regid=daemon --clear-groups cat /tmp/acl-test/file 2>&1 || true")
    lines = out.splitlines()
    assert lines[:2] == ["user:nobody:r--", "secret"], out
    assert "Permission denied" in lines[2], out


def test_a_reboot_inside_the_node_boots_it_with_a_new_boot_id(lab):
    # ansible.builtin.reboot's defaults: /sbin/shutdown -r 0 (a link to systemctl, the lab's) and
    # /proc/sys/kernel/random/boot_id, which is the node's own and changes at every boot, RebootInstances or not.
    node = _by_platform(lab, "al2023")
    lab.wait_online(node, timeout=30)
    with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as handle:
        machine = handle.read().strip()
    first = lab.run_ok(node, "cat /proc/sys/kernel/random/boot_id").strip()
    assert first != machine and lab.run_ok(node, "cat /proc/sys/kernel/random/boot_id").strip() == first
    boot = lab.admin(f"nodes/{node}")["boot"]
    assert lab.run_ok(node, '/sbin/shutdown -r 0 "Reboot initiated by Ansible"; echo rc=$?').strip() == "rc=0"
    wait_until(lambda: lab.admin(f"nodes/{node}")["booted"] == boot + 1, timeout=20, what="the node to reboot")
    lab.wait_online(node, timeout=30)
    second = lab.run_ok(node, "cat /proc/sys/kernel/random/boot_id").strip()
    assert second not in (first, machine)
    lab.ec2.reboot_instances(InstanceIds=[node])
    wait_until(lambda: lab.admin(f"nodes/{node}")["booted"] == boot + 2, timeout=20, what="RebootInstances")
    lab.wait_online(node, timeout=30)
    assert lab.run_ok(node, "cat /proc/sys/kernel/random/boot_id").strip() not in (first, second)
    invocation = lab.run(node, "shutdown -h now")
    assert invocation["Status"] == "Failed" and "is not modelled in the lab" in invocation["StandardErrorContent"]
