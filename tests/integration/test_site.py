"""site.yml and ad-hoc commands over Session Manager against the lab, with the collection as installed."""

import json
import os

from ansible_cli import run

INVENTORY = "inventories/lab"


def _nodes(lab):
    return [n["id"] for n in json.loads(lab.cli("status", "--json").stdout)["nodes"]]


def _bucket_exists(lab, name="bastionless-lab-transfer"):
    return name in [b["Name"] for b in lab.client("s3").list_buckets()["Buckets"]]


def test_check_mode_on_a_fresh_lab_predicts_and_changes_nothing(lab):
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, "playbooks/site.yml", "--check")
    assert recap["localhost"]["changed"] == 1, output  # the transfer bucket would be created
    assert not _bucket_exists(lab)


def test_site_configures_every_node_over_session_manager(lab):
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, "playbooks/site.yml")
    nodes = _nodes(lab)
    assert sorted(h for h in recap if h != "localhost") == sorted(nodes)
    for node in nodes:
        assert recap[node]["failed"] == 0 and recap[node]["unreachable"] == 0, output
        assert recap[node]["changed"] >= 3, output
        assert "Served over Session Manager from the lab" in output
    assert _bucket_exists(lab)
    sessions = lab.client("ssm").describe_sessions(State="History")["Sessions"]
    assert {s["Target"] for s in sessions} == set(nodes)


def test_second_run_changes_nothing(lab):
    output, recap = run(lab, "ansible-playbook", "-i", INVENTORY, "playbooks/site.yml")
    assert recap and all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), output


def test_ad_hoc_command_across_the_fleet(lab):
    output, _recap = run(lab, "ansible", "-i", INVENTORY, "all", "-m", "ansible.builtin.command", "-a", "cat /etc/hostname")
    for node in json.loads(lab.cli("status", "--json").stdout)["nodes"]:
        assert f"{node['id']} | CHANGED | rc=0" in output
        assert node["hostname"] in output


def test_the_configuration_lives_on_the_nodes_not_on_this_machine(lab):
    assert not os.path.exists("/srv/bastionless/index.html")
    output, _recap = run(lab, "ansible", "-i", INVENTORY, "all", "-m", "ansible.builtin.command",
                         "-a", "cat /srv/bastionless/index.html")
    assert output.count("Served over Session Manager from the lab") == 3


def test_no_sshd_runs_on_the_nodes(lab):
    # Each node has its own PID namespace: ps sees the node's processes only.
    output, _recap = run(lab, "ansible", "-i", INVENTORY, "all", "-m", "ansible.builtin.shell",
                         "-a", "ps -eo comm | grep -c sshd || true")
    assert output.count("\n0") == 3, output
