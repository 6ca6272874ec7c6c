"""bastionless.ssm.ssm_association and ssm_association_info against a lab, through ansible-playbook: one play that
creates in check mode and for real, proves idempotence, updates a live association, lists it, refuses bad input
without creating anything, and deletes it (one ansible-playbook run for all of it); then playbooks/pull.yml (the
pull_association role and ssm_pull_bundle) on the same lab: its bad inputs and check mode in one run, and two real
runs in another, the nodes running AWS-ApplyAnsiblePlaybooks."""

import json
import os
import secrets

import pytest
from ansible_cli import ROOT, controller_play, run, run_cases, save_task
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
        "offset_range": {**base, "name": f"{name}-offr", "schedule_expression": "cron(0 3 ? * TUE#2 *)",
                         "apply_only_at_cron_interval": True, "schedule_offset": 9},
        "offset_alone": {**base, "name": f"{name}-offa", "schedule_expression": "cron(0 3 ? * TUE#2 *)",
                         "schedule_offset": 2},
    }
    # The Sunday after each second Tuesday: an offset of 5 days, which needs apply_only_at_cron_interval.
    offset = {**base, "name": f"{name}-offset", "schedule_expression": "cron(0 3 ? * TUE#2 *)",
              "apply_only_at_cron_interval": True, "schedule_offset": 5,
              "targets": [{"key": "InstanceIds", "values": sorted(lab.network["nodes"])[:1]}]}  # not base's work
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
        {"name": "Create with an offset", MODULE: offset, "register": "offset"},
        {"name": "Create with an offset again", MODULE: offset, "register": "offset_again"},
        {"name": "Remove the offset", MODULE: {"name": offset["name"], "schedule_offset": 0},
         "register": "offset_removed"},
        {"name": "Delete the one with an offset", MODULE: {"name": offset["name"], "state": "absent"}},
        {"name": "Delete in check mode", MODULE: {"name": name, "state": "absent"}, "check_mode": True,
         "register": "check_delete"},
        {"name": "Delete", MODULE: {"name": name, "state": "absent"}, "register": "delete"},
        {"name": "Delete again", MODULE: {"name": name, "state": "absent"}, "register": "delete_again"},
    ]
    names = ["check_create", "after_check", "create", "again", "check_update", "update", "listed",
             *(f"bad_{case}" for case in bad), "offset", "offset_again", "offset_removed", "check_delete", "delete",
             "delete_again"]
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
    # Its warning, once, and no deprecation notice with it (amazon.aws's AnsibleAWSModule.warn would add one).
    assert output.count(f"[WARNING]: association '{name}' is in place, but its run did not succeed on 2 of 2") == 1
    assert "DEPRECATION" not in output, output

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
    assert "schedule_offset 9 is not a number of days State Manager takes: 1 to 6" in messages["offset_range"]
    assert "schedule_offset 2 needs apply_only_at_cron_interval true" in messages["offset_alone"]

    assert got["offset"]["changed"] and got["offset"]["association"]["schedule_offset"] == 5, output
    assert not got["offset_again"]["changed"], output
    removed = got["offset_removed"]
    assert removed["changes"] == ["ScheduleOffset"] and "schedule_offset" not in removed["association"], output
    assert removed["association"]["apply_only_at_cron_interval"] is True  # the rest kept

    assert got["check_delete"]["changed"]
    assert got["delete"]["changed"] and not got["delete_again"]["changed"]
    # nothing half-created by the bad inputs, nothing left by the deletion
    assert lab.client("ssm").list_associations()["Associations"] == []


def _bundle_bucket(lab, name: str, expiry: bool = False, archive: bool = False) -> str:
    s3 = lab.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    if expiry:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
            {"ID": "expire-all", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]})
    if archive:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
            {"ID": "to-glacier", "Status": "Enabled", "Filter": {"Prefix": "pull/"},
             "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}]})
    return name


def test_pull_playbook_runs_on_each_node_then_changes_nothing(lab, tmp_path):
    """playbooks/pull.yml: bad inputs and check mode change nothing (one run of the role, a host per case); then
    pull.yml twice in one run: the nodes really run the bundled playbook, and the second run changes nothing."""
    suffix = secrets.token_hex(3)
    bucket = _bundle_bucket(lab, f"pull-{suffix}")
    expiring = _bundle_bucket(lab, f"pull-exp-{suffix}", expiry=True)
    archiving = _bundle_bucket(lab, f"pull-arc-{suffix}", archive=True)
    name, label = f"pull-{suffix}", f"label-{suffix}"
    node_playbook = os.path.join(ROOT, "playbooks", "files", "pull-node.yml")
    good = {"pull_association_name": name, "pull_association_playbook": node_playbook,
            "pull_association_bucket": bucket, "pull_association_targets": FLEET,
            "pull_association_node_role": "ssm-lab-node"}  # the lab's --provisioned nodes' role
    cases = run_cases(lab, tmp_path, "bastionless.ssm.pull_association", {
        "check": good,
        "no_bucket": {**good, "pull_association_bucket": f"pull-none-{suffix}"},
        "expiring": {**good, "pull_association_bucket": expiring},
        "archiving": {**good, "pull_association_bucket": archiving},
        "bad_prefix": {**good, "pull_association_key_prefix": "/pull/"},
        "no_playbook": {**good, "pull_association_playbook": str(tmp_path / "missing.yml")},
        "no_node": {**good, "pull_association_targets": [{"key": "tag:Role", "values": ["nobody"]}]},
        "bad_errors": {**good, "pull_association_max_errors": "150%"},
        "no_role": {**good, "pull_association_node_role": "no-such-role"},
    }, "--check")
    assert "check" in cases.recap, cases.output
    # Would upload and create (the message), and would grant the nodes' role the reading of the bundles.
    assert cases.recap["check"]["failed"] == 0 and cases.recap["check"]["changed"] == 2, cases.output
    assert f"pull_association: bucket 'pull-none-{suffix}' does not exist" in cases.only_failure("no_bucket")
    assert "lifecycle rule 'expire-all' expiring objects" in cases.only_failure("expiring")
    assert (f"pull_association: bucket '{archiving}' has lifecycle rule 'to-glacier' moving objects under 'pull/' to "
            "GLACIER: the agent cannot fetch an archived bundle") in cases.only_failure("archiving")
    # The role's variables, not the module's options, in its errors.
    assert "pull_association: pull_association_key_prefix '/pull/' is not an S3 key prefix" in cases.only_failure(
        "bad_prefix")
    assert (f"pull_association: pull_association_playbook '{tmp_path / 'missing.yml'}' is not a file on the "
            "controller") in cases.only_failure("no_playbook")
    assert "targets (tag:Role=nobody) match no managed node" in cases.only_failure("no_node")
    assert "max_errors '150%' is over 100%" in cases.only_failure("bad_errors")
    assert ("pull_association: pull_association_node_role: there is no IAM role named no-such-role in this account"
            in cases.only_failure("no_role"))
    assert f"bastionless-pull-{name}" not in lab.client("iam").list_role_policies(RoleName="ssm-lab-node")["PolicyNames"]
    for each in (bucket, expiring, archiving):  # nothing uploaded, nothing created, by check mode and bad input alike
        assert lab.client("s3").list_objects_v2(Bucket=each).get("KeyCount", 0) == 0
    assert lab.client("ssm").list_associations()["Associations"] == []

    # The nodes download the bundle with their instance profile, which the lab judges: the lab's --provisioned role
    # has only its output writes, and the role grants it the reading of the bundles (bastionless_pull_node_role).
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    wrapper = tmp_path / "twice.yml"
    pull = os.path.join(ROOT, "playbooks", "pull.yml")
    wrapper.write_text(json.dumps([
        {"import_playbook": pull},
        {"name": "Keep the first result", "hosts": "localhost", "gather_facts": False,
         "tasks": [{"name": "Keep it", "ansible.builtin.set_fact": {"first_result": "{{ pull_association_result }}"}},
                   save_task("first_result", first)]},
        {"import_playbook": pull},
        {"name": "Keep the second result", "hosts": "localhost", "gather_facts": False,
         "tasks": [save_task("pull_association_result", second)]},
    ]))
    extra = {"bastionless_pull_name": name, "bastionless_pull_bucket": bucket, "bastionless_pull_playbook": node_playbook,
             "bastionless_pull_targets": FLEET, "bastionless_pull_max_concurrency": "2",
             "bastionless_pull_extra_variables": f"SSM=True pull_node_label={label}",
             "bastionless_pull_node_role": "ssm-lab-node"}
    output, _recap = run(lab, "ansible-playbook", "-i", "localhost,", str(wrapper), "-e", json.dumps(extra))
    one, two = json.loads(first.read_text()), json.loads(second.read_text())
    nodes = sorted(lab.network["nodes"])
    try:
        assert one["uploaded"] and one["association_changed"], output
        assert one["nodes"] == {node: "Success" for node in nodes}, output
        assert one["key"].startswith("pull/pull-node-") and one["key"].endswith(".zip")
        for node in nodes:  # the playbook really ran on each node, from the bundle, with the association's variables
            applied = os.path.join(lab.state_dir, "nodes", node, "upper", "var", "lib", "bastionless-pull", "applied.json")
            with open(applied, encoding="utf-8") as handle:
                assert json.load(handle) == {"label": label, "ssm": "True"}
        assert not two["uploaded"] and not two["association_changed"] and two["changes"] == [], output
        assert two["key"] == one["key"] and two["nodes"] == {} and two["association_version"] == "1"
        keys = [o["Key"] for o in lab.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == [one["key"]]
        granted = lab.client("iam").get_role_policy(RoleName="ssm-lab-node", PolicyName=f"bastionless-pull-{name}")
        assert granted["PolicyDocument"]["Statement"] == [  # the bucket encrypts with SSE-S3: no KMS grant
            {"Sid": "ReadPullBundles", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{bucket}/pull/*"}]
    finally:
        lab.client("ssm").delete_association(AssociationId=one["association_id"])
