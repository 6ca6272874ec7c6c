"""State Manager associations in the lab: runs through the Run Command engine, rate control, versions, errors."""

from __future__ import annotations

import datetime as _dt
import secrets
import time

import pytest
from botocore.exceptions import ClientError
from labhelpers import wait_until
from ssm_lab.aws.associations import SCHEDULE_SECONDS


def _wait_execution(lab, association_id: str, count: int = 1, timeout: float = 30.0) -> dict:
    """The newest execution once ``count`` executions exist and the newest has ended."""

    def done():
        executions = lab.ssm.describe_association_executions(AssociationId=association_id)["AssociationExecutions"]
        if len(executions) >= count and executions[0]["Status"] not in ("Pending", "InProgress"):
            return executions[0]
        return None

    return wait_until(done, timeout, what=f"execution {count} of association {association_id} to end")


def _targets(lab, association_id: str, execution_id: str) -> dict:
    rows = lab.ssm.describe_association_execution_targets(
        AssociationId=association_id, ExecutionId=execution_id)["AssociationExecutionTargets"]
    return {row["ResourceId"]: row for row in rows}


def test_rollout_stops_past_max_errors(main_lab):
    nodes = main_lab.ec2_ids[:4]
    created = main_lab.ssm.create_association(
        Name="AWS-RunShellScript", AssociationName=f"fail-{secrets.token_hex(3)}",
        Parameters={"commands": ["exit 4"]}, Targets=[{"Key": "InstanceIds", "Values": nodes}],
        MaxConcurrency="1", MaxErrors="1")["AssociationDescription"]
    association_id = created["AssociationId"]
    try:
        assert created["Overview"]["Status"] == "Pending"
        execution = _wait_execution(main_lab, association_id)
        assert execution["Status"] == "Failed"
        targets = _targets(main_lab, association_id, execution["ExecutionId"])
        statuses = sorted(t["Status"] for t in targets.values())
        # one at a time: the second failure exceeds MaxErrors 1, the two nodes not yet started are not run
        assert statuses == ["Cancelled", "Cancelled", "Failed", "Failed"], targets
        assert execution["ResourceCountByStatus"] == "{Cancelled=2, Failed=2}"
        source = next(t for t in targets.values() if t["Status"] == "Failed")
        invocation = main_lab.ssm.get_command_invocation(CommandId=source["OutputSource"]["OutputSourceId"],
                                                         InstanceId=source["ResourceId"])
        assert invocation["ResponseCode"] == 4
        described = main_lab.ssm.describe_association(AssociationId=association_id)["AssociationDescription"]
        assert described["Overview"]["Status"] == "Failed"
        assert described["Overview"]["AssociationStatusAggregatedCount"] == {"Cancelled": 2, "Failed": 2}
        assert "LastSuccessfulExecutionDate" not in described
    finally:
        main_lab.ssm.delete_association(AssociationId=association_id)


def test_update_of_a_live_association_runs_the_new_version_by_tag(main_lab):
    node = main_lab.ec2_ids[1]
    name = {t["Key"]: t["Value"] for t in main_lab.instance(node)["Tags"]}["Name"]
    marker = secrets.token_hex(4)
    association_name = f"live-{marker}"
    created = main_lab.ssm.create_association(
        Name="AWS-RunShellScript", AssociationName=association_name, ScheduleExpression="rate(30 minutes)",
        Parameters={"commands": [f"echo one-{marker} > /tmp/assoc-{marker}"]},
        Targets=[{"Key": "tag:Name", "Values": [name]}], ComplianceSeverity="HIGH")["AssociationDescription"]
    association_id = created["AssociationId"]
    try:
        first = _wait_execution(main_lab, association_id)
        assert first["Status"] == "Success", first
        assert list(_targets(main_lab, association_id, first["ExecutionId"])) == [node]
        updated = main_lab.ssm.update_association(
            AssociationId=association_id, Name="AWS-RunShellScript", AssociationName=association_name,
            Parameters={"commands": [f"cat /tmp/assoc-{marker}; echo two-{marker}"]},
            Targets=[{"Key": "tag:Name", "Values": [name]}])["AssociationDescription"]
        assert updated["AssociationVersion"] == "2"
        # settings left out of an update are reset, as on AWS
        assert "ScheduleExpression" not in updated
        assert updated["ComplianceSeverity"] == "UNSPECIFIED"
        second = _wait_execution(main_lab, association_id, count=2)
        assert second["Status"] == "Success" and second["AssociationVersion"] == "2"
        target = _targets(main_lab, association_id, second["ExecutionId"])[node]
        output = main_lab.wait_invocation(target["OutputSource"]["OutputSourceId"], node)["StandardOutputContent"]
        assert output == f"one-{marker}\ntwo-{marker}\n"
        versions = main_lab.ssm.list_association_versions(AssociationId=association_id)["AssociationVersions"]
        assert [v["AssociationVersion"] for v in versions] == ["2", "1"]
        assert versions[1]["ScheduleExpression"] == "rate(30 minutes)"
        first_version = main_lab.ssm.describe_association(AssociationId=association_id,
                                                          AssociationVersion="1")["AssociationDescription"]
        assert first_version["ComplianceSeverity"] == "HIGH"
        listed = main_lab.ssm.list_associations(
            AssociationFilterList=[{"key": "AssociationName", "value": association_name}])["Associations"]
        assert [a["AssociationId"] for a in listed] == [association_id]
        with pytest.raises(ClientError) as stale:
            main_lab.ssm.update_association(AssociationId=association_id, AssociationVersion="1",
                                            Parameters={"commands": ["true"]})
        assert stale.value.response["Error"]["Code"] == "InvalidAssociationVersion"
    finally:
        main_lab.ssm.delete_association(AssociationId=association_id)
    main_lab.run(node, f"rm -f /tmp/assoc-{marker}")


def test_deletion_and_bad_requests(main_lab):
    node = main_lab.ec2_ids[2]
    base = {"Name": "AWS-RunShellScript", "Parameters": {"commands": ["true"]},
            "Targets": [{"Key": "InstanceIds", "Values": [node]}]}
    cases = {
        "InvalidDocument": {**base, "Name": "No-Such-Document"},
        "InvalidSchedule": {**base, "ScheduleExpression": "rate(5 minutes)"},
        "InvalidTarget": {**base, "Targets": [{"Key": "color", "Values": ["blue"]}]},
        "InvalidOutputLocation": {**base, "OutputLocation": {"S3Location": {"OutputS3BucketName": "no-such-bkt"}}},
    }
    for code, request in cases.items():
        with pytest.raises(ClientError) as refused:
            main_lab.ssm.create_association(**request)
        assert refused.value.response["Error"]["Code"] == code, request
    for code, extra in (("InvalidSchedule", {"ScheduleExpression": "cron(0/15 * * * ? *)"}),
                        ("InvalidSchedule", {"ScheduleExpression": "cron(0 2 ? JAN SUN *)"}),
                        ("InvalidParameters", {"ScheduleExpression": "rate(1 day)", "ApplyOnlyAtCronInterval": True})):
        with pytest.raises(ClientError) as refused:
            main_lab.ssm.create_association(**base, **extra)
        assert refused.value.response["Error"]["Code"] == code, extra
    with pytest.raises(ClientError) as refused:
        main_lab.ssm.create_association(**base, MaxErrors="150%")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "maxErrors" in refused.value.response["Error"]["Message"]

    name = f"gone-{secrets.token_hex(3)}"
    association_id = main_lab.ssm.create_association(**base, AssociationName=name)["AssociationDescription"][
        "AssociationId"]
    with pytest.raises(ClientError) as twice:
        main_lab.ssm.create_association(**base, AssociationName=name)
    assert twice.value.response["Error"]["Code"] == "AssociationAlreadyExists"
    assert _wait_execution(main_lab, association_id)["Status"] == "Success"
    main_lab.ssm.delete_association(AssociationId=association_id)
    for call in (lambda: main_lab.ssm.describe_association(AssociationId=association_id),
                 lambda: main_lab.ssm.delete_association(AssociationId=association_id),
                 lambda: main_lab.ssm.describe_association_executions(AssociationId=association_id)):
        with pytest.raises(ClientError) as gone:
            call()
        assert gone.value.response["Error"]["Code"] == "AssociationDoesNotExist"
    listed = main_lab.ssm.list_associations(AssociationFilterList=[{"key": "AssociationName", "value": name}])
    assert listed["Associations"] == []


def test_a_node_that_comes_back_online_gets_the_association(main_lab):
    away, present = main_lab.ec2_ids[4], main_lab.ec2_ids[3]
    main_lab.wait_online(away)
    main_lab.cli("agent", "drop", away, "--seconds", "6")
    main_lab.wait_not_online(away)
    association_id = main_lab.ssm.create_association(
        Name="AWS-RunShellScript", AssociationName=f"late-{secrets.token_hex(3)}", Parameters={"commands": ["true"]},
        Targets=[{"Key": "InstanceIds", "Values": [away, present]}])["AssociationDescription"]["AssociationId"]
    try:
        first = _wait_execution(main_lab, association_id)
        assert list(_targets(main_lab, association_id, first["ExecutionId"])) == [present]
        main_lab.wait_online(away)
        late = _wait_execution(main_lab, association_id, count=2)
        assert late["AssociationVersion"] == "1" and late["Status"] == "Success"
        assert list(_targets(main_lab, association_id, late["ExecutionId"])) == [away]
    finally:
        main_lab.ssm.delete_association(AssociationId=association_id)


def test_a_cron_association_runs_only_at_its_times(main_lab):
    node = main_lab.ec2_ids[5]
    association_id = main_lab.ssm.create_association(
        Name="AWS-RunShellScript", AssociationName=f"cron-{secrets.token_hex(3)}", Parameters={"commands": ["true"]},
        Targets=[{"Key": "InstanceIds", "Values": [node]}], ScheduleExpression="cron(15 13 ? * * *)",
        ApplyOnlyAtCronInterval=True)["AssociationDescription"]["AssociationId"]
    try:
        # not on creation: ApplyOnlyAtCronInterval waits for the next 13:15 UTC, which a day on the schedule's
        # clock (the lab's admin API moves it forward) reaches
        assert main_lab.ssm.describe_association_executions(AssociationId=association_id)["AssociationExecutions"] == []
        for count in (1, 2):
            main_lab.admin_post("clock", {"advance": 86400})
            execution = _wait_execution(main_lab, association_id, count=count)
            assert execution["Status"] == "Success", execution
            assert list(_targets(main_lab, association_id, execution["ExecutionId"])) == [node]
            # once a day: each day ahead is one run, not one per look of the scheduler
            executions = main_lab.ssm.describe_association_executions(AssociationId=association_id)
            assert len(executions["AssociationExecutions"]) == count
    finally:
        main_lab.ssm.delete_association(AssociationId=association_id)


def test_a_schedule_offset_runs_that_many_days_after_each_cron_time(main_lab):
    node = main_lab.ec2_ids[5]
    now = _dt.datetime.fromtimestamp(main_lab.admin("clock")["now"], _dt.timezone.utc)
    monday = (now + _dt.timedelta(days=-now.weekday() % 7)).replace(hour=13, minute=15, second=0, microsecond=0)
    if monday <= now:
        monday += _dt.timedelta(days=7)  # the next Monday 13:15 UTC
    association_id = main_lab.ssm.create_association(
        Name="AWS-RunShellScript", AssociationName=f"offset-{secrets.token_hex(3)}", Parameters={"commands": ["true"]},
        Targets=[{"Key": "InstanceIds", "Values": [node]}], ScheduleExpression="cron(15 13 ? * MON *)",
        ApplyOnlyAtCronInterval=True, ScheduleOffset=3)["AssociationDescription"]["AssociationId"]
    try:
        description = main_lab.ssm.describe_association(AssociationId=association_id)["AssociationDescription"]
        assert description["ScheduleOffset"] == 3
        # The Monday itself runs nothing; the Thursday 3 days after the Monday before may still be ahead of now.
        earlier = 1 if monday - _dt.timedelta(days=4) > now else 0
        main_lab.admin_post("clock", {"advance": (monday - now).total_seconds() + 60})
        if earlier:
            _wait_execution(main_lab, association_id, count=1)
        time.sleep(2 * SCHEDULE_SECONDS + 1)  # the scheduler has looked at least twice since the Monday
        runs = main_lab.ssm.describe_association_executions(AssociationId=association_id)["AssociationExecutions"]
        assert len(runs) == earlier, runs
        main_lab.admin_post("clock", {"advance": 3 * 86400})  # the Thursday after that Monday
        execution = _wait_execution(main_lab, association_id, count=earlier + 1)
        assert execution["Status"] == "Success" and list(_targets(main_lab, association_id, execution["ExecutionId"])) == [node]
    finally:
        main_lab.ssm.delete_association(AssociationId=association_id)


@pytest.mark.parametrize("settings, code", [
    ({"ApplyOnlyAtCronInterval": True, "ScheduleOffset": 7}, "ValidationException"),
    ({"ScheduleOffset": 2}, "InvalidParameters"),  # AWS: offsets need ApplyOnlyAtCronInterval
])
def test_a_schedule_offset_out_of_range_or_without_apply_only_at_cron_interval_is_refused(main_lab, settings, code):
    with pytest.raises(ClientError) as refused:
        main_lab.ssm.create_association(
            Name="AWS-RunShellScript", AssociationName=f"offset-{secrets.token_hex(3)}",
            Parameters={"commands": ["true"]}, Targets=[{"Key": "InstanceIds", "Values": [main_lab.ec2_ids[5]]}],
            ScheduleExpression="cron(15 13 ? * MON *)", **settings)
    assert refused.value.response["Error"]["Code"] == code
