"""bastionless.ssm.ssm_association and ssm_association_info against a lab, through ansible-playbook: one play that
creates in check mode and for real, proves idempotence, updates a live association, lists it, refuses bad input
without creating anything, and deletes it (one ansible-playbook run for all of it)."""

import json
import secrets

import pytest
from ansible_cli import controller_play, save_task
from ssm_lab.harness.testing import running_lab

MODULE = "bastionless.ssm.ssm_association"
INFO = "bastionless.ssm.ssm_association_info"
FLEET = [{"key": "tag:ssm-lab", "values": ["node"]}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--provisioned") as lab:
        yield lab


def test_create_idempotence_check_mode_update_bad_input_delete(lab, tmp_path):
    name = f"lab-{secrets.token_hex(3)}"
    marker = secrets.token_hex(4)
    base = {"name": name, "document_name": "AWS-RunShellScript", "targets": FLEET,
            "parameters": {"commands": [f"echo {marker}"]}, "schedule_expression": "rate(30 minutes)",
            "max_concurrency": "1", "compliance_severity": "HIGH", "wait_timeout": 60}
    bad = {
        "document": {**base, "name": f"{name}-doc", "document_name": "No-Such-Document"},
        "schedule": {**base, "name": f"{name}-cron", "schedule_expression": "cron(0 2 *)"},
        "max_errors": {**base, "name": f"{name}-errors", "max_errors": "150%"},
        "no_node": {**base, "name": f"{name}-tag", "targets": [{"key": "tag:Role", "values": ["nobody"]}]},
        "bucket": {**base, "name": f"{name}-bucket", "output_s3_bucket": "no-such-bucket-here"},
    }
    tasks = [
        {"name": "Create in check mode", MODULE: base, "check_mode": True, "register": "check_create"},
        {"name": "List after check mode", INFO: {"name": name}, "register": "after_check"},
        {"name": "Create", MODULE: base, "register": "create"},
        {"name": "Create again", MODULE: base, "register": "again"},
        {"name": "Update in check mode", MODULE: {"name": name, "max_errors": "0"}, "check_mode": True,
         "register": "check_update"},
        {"name": "Update", MODULE: {"name": name, "max_errors": "0", "parameters": {"commands": ["exit 2"]}},
         "register": "update", "ignore_errors": True},
        {"name": "List", INFO: {"name": name, "executions": 2}, "register": "listed"},
        *({"name": f"Bad {case}", MODULE: args, "register": f"bad_{case}", "ignore_errors": True}
          for case, args in bad.items()),
        {"name": "Delete in check mode", MODULE: {"name": name, "state": "absent"}, "check_mode": True,
         "register": "check_delete"},
        {"name": "Delete", MODULE: {"name": name, "state": "absent"}, "register": "delete"},
        {"name": "Delete again", MODULE: {"name": name, "state": "absent"}, "register": "delete_again"},
    ]
    names = ["check_create", "after_check", "create", "again", "check_update", "update", "listed",
             *(f"bad_{case}" for case in bad), "check_delete", "delete", "delete_again"]
    files = {var: tmp_path / f"{var}.json" for var in names}
    output, _recap = controller_play(lab, tmp_path, [*tasks, *(save_task(v, files[v]) for v in names)], "--diff")
    got = {var: json.loads(path.read_text()) for var, path in files.items()}
    nodes = sorted(lab.network["nodes"])

    assert got["check_create"]["changed"] and got["check_create"]["diff"]["before"] == {}, output
    assert got["after_check"]["associations"] == []

    create = got["create"]
    assert create["changed"] and not create.get("failed"), output
    assert create["association"]["association_name"] == name
    assert create["execution"]["status"] == "Success"
    assert [t["resource_id"] for t in create["execution"]["targets"]] == nodes
    assert create["execution"]["summary"] == {"total": 2, "by_status": {"Success": 2}, "failed": 0}
    assert not got["again"]["changed"] and got["again"]["changes"] == []

    check_update = got["check_update"]
    assert check_update["changed"] and check_update["changes"] == ["MaxErrors"]
    assert check_update["diff"]["after"]["max_errors"] == "0"
    assert check_update["association"]["association_version"] == "2"

    update = got["update"]  # the new command fails on the first node and MaxErrors 0 stops the rollout
    assert update["changes"] == ["Parameters", "MaxErrors"]
    assert update["association"]["association_version"] == "2"
    assert update["association"]["schedule_expression"] == "rate(30 minutes)"  # kept although not given
    assert update["association"]["compliance_severity"] == "HIGH"
    assert update["execution"]["status"] == "Failed"
    assert update["execution"]["summary"]["by_status"] == {"Failed": 1, "Cancelled": 1}

    listed = got["listed"]["associations"]
    assert [a["association_name"] for a in listed] == [name]
    assert [e["association_version"] for e in listed[0]["executions"]] == ["2", "1"]
    assert listed[0]["parameters"] == {"commands": ["exit 2"]}

    messages = {case: got[f"bad_{case}"].get("msg", "") for case in bad}
    assert all(got[f"bad_{case}"].get("failed") for case in bad), messages
    assert "document_name 'No-Such-Document'" in messages["document"]
    assert "schedule_expression 'cron(0 2 *)' has 3 fields" in messages["schedule"]
    assert "max_errors '150%' is over 100%" in messages["max_errors"]
    assert "targets (tag:Role=nobody) match no managed node" in messages["no_node"]
    assert "output_s3_bucket 'no-such-bucket-here' does not exist" in messages["bucket"]

    assert got["check_delete"]["changed"]
    assert got["delete"]["changed"] and not got["delete_again"]["changed"]
    # nothing half-created by the bad inputs, nothing left by the deletion
    assert lab.client("ssm").list_associations()["Associations"] == []
