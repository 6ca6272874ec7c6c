"""The pure part of bastionless.ssm.ssm_association (module_utils/_association.py): input checks, the wanted
settings, their comparison with DescribeAssociation's answer, and the request that UpdateAssociation needs."""

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _association as assoc

TARGETS = [{"key": "tag:Role", "values": ["web"]}]


def params(**overrides):
    base = {"name": "web-chrony", "state": "present", "document_name": "AWS-RunShellScript",
            "document_version": None, "parameters": {"commands": ["uptime"]}, "targets": TARGETS,
            "schedule_expression": None, "apply_only_at_cron_interval": None, "max_concurrency": None,
            "max_errors": None, "compliance_severity": None, "sync_compliance": None, "output_s3_bucket": None,
            "output_s3_key_prefix": None, "schedule_offset": None}
    base.update(overrides)
    return base


def description(**overrides):
    """DescribeAssociation's AssociationDescription as AWS returns it for a plain association."""
    base = {"AssociationId": "8dfe3659-4309-493a-8755-0123456789ab", "AssociationName": "web-chrony",
            "AssociationVersion": "1", "Name": "AWS-RunShellScript", "DocumentVersion": "$DEFAULT",
            "Parameters": {"commands": ["uptime"]}, "Targets": [{"Key": "tag:Role", "Values": ["web"]}],
            "ComplianceSeverity": "UNSPECIFIED", "SyncCompliance": "AUTO", "ApplyOnlyAtCronInterval": False,
            "Overview": {"Status": "Success"}}
    base.update(overrides)
    return base


@pytest.mark.parametrize("overrides, needle", [
    ({"name": "x"}, "name 'x'"),
    ({"schedule_expression": "rate(5 minutes)"}, "30 minutes or more"),
    ({"schedule_expression": "every day"}, "neither 'rate(N minutes|hours|days)' nor 'cron(...)'"),
    ({"schedule_expression": "cron(0 2 *)"}, "has 3 fields"),
    ({"schedule_expression": "cron(5 0 2 ? * SUN *)"}, "has 7 fields"),  # seconds other than 0
    ({"schedule_expression": "cron(0 2 * * SUN *)"}, "'?' in exactly one of its day-of-month and day-of-week"),
    ({"schedule_expression": "cron(0 2 ? * ? *)"}, "'?' in exactly one of its day-of-month and day-of-week"),
    ({"apply_only_at_cron_interval": True, "schedule_expression": "rate(1 day)"}, "needs a cron"),
    ({"max_errors": "150%"}, "max_errors '150%' is over 100%"),
    ({"max_errors": "lots"}, "max_errors 'lots' is not a count"),
    ({"max_concurrency": "0"}, "max_concurrency '0'"),
    ({"targets": []}, "targets is empty"),
    ({"targets": [{"key": "color", "values": ["blue"]}]}, "targets key 'color'"),
    ({"targets": [{"key": "tag:Role", "values": []}]}, "has no values"),
    ({"output_s3_key_prefix": "out"}, "needs output_s3_bucket"),
    ({"schedule_offset": 7}, "schedule_offset 7 is not a number of days State Manager takes: 1 to 6, or 0"),
    ({"schedule_offset": -1}, "schedule_offset -1"),
])
def test_validate_names_the_option_and_the_fix(overrides, needle):
    problem = assoc.validate(params(**overrides))
    assert problem is not None and needle in problem


@pytest.mark.parametrize("overrides", [
    {}, {"schedule_expression": "rate(30 minutes)"}, {"schedule_expression": "rate(1 day)"},
    {"schedule_expression": "cron(0 2 ? * SUN *)", "apply_only_at_cron_interval": True},
    {"schedule_expression": "cron(0 0 2 ? * SUN *)"}, {"schedule_expression": "cron(0 2 1 * ?)"},
    {"max_errors": "0"}, {"max_errors": "100%"}, {"max_errors": "0%"}, {"max_concurrency": "10%"},
    {"schedule_expression": "", "max_errors": "", "max_concurrency": ""},
    {"state": "absent", "schedule_expression": "rate(1 minute)"},
    {"schedule_expression": "cron(0 3 ? * TUE#2 *)", "apply_only_at_cron_interval": True, "schedule_offset": 5},
    {"schedule_offset": 0},
])
def test_validate_accepts(overrides):
    assert assoc.validate(params(**overrides)) is None


def test_unchanged_association_has_no_differences():
    before = assoc.current(description())
    after = assoc.merged(before, assoc.requested(params()))
    assert assoc.differences(before, after) == []


def test_target_and_value_order_do_not_count():
    before = assoc.current(description(Targets=[{"Key": "tag:Role", "Values": ["web", "api"]},
                                                {"Key": "tag-key", "Values": ["Team"]}]))
    wanted = assoc.requested(params(targets=[{"key": "tag-key", "values": ["Team"]},
                                             {"key": "tag:Role", "values": ["api", "web"]}]))
    assert assoc.differences(before, assoc.merged(before, wanted)) == []


def test_unset_options_leave_settings_alone():
    before = assoc.current(description(ScheduleExpression="rate(1 hour)", MaxErrors="1",
                                       OutputLocation={"S3Location": {"OutputS3BucketName": "out",
                                                                      "OutputS3Region": "us-east-1"}}))
    after = assoc.merged(before, assoc.requested(params(max_errors="2")))
    assert assoc.differences(before, after) == ["MaxErrors"]
    request = assoc.request(after, "web-chrony")
    # UpdateAssociation resets what a request leaves out: everything set is sent again
    assert request["ScheduleExpression"] == "rate(1 hour)"
    assert request["OutputLocation"] == {"S3Location": {"OutputS3BucketName": "out"}}
    assert request["MaxErrors"] == "2"
    assert "MaxConcurrency" not in request


def test_empty_string_removes_a_setting():
    before = assoc.current(description(ScheduleExpression="rate(1 hour)", MaxConcurrency="2"))
    after = assoc.merged(before, assoc.requested(params(schedule_expression="", max_concurrency="",
                                                        document_name=None, targets=None, parameters=None)))
    assert assoc.differences(before, after) == ["ScheduleExpression", "MaxConcurrency"]
    request = assoc.request(after, "web-chrony")
    assert "ScheduleExpression" not in request and "MaxConcurrency" not in request
    assert "ApplyOnlyAtCronInterval" not in request


def test_parameters_become_lists_of_strings():
    wanted = assoc.requested(params(parameters={"commands": "uptime", "executionTimeout": 60}))
    assert wanted["Parameters"] == {"commands": ["uptime"], "executionTimeout": ["60"]}
    before = assoc.current(description(Parameters={"commands": ["uptime"], "executionTimeout": ["60"]}))
    assert assoc.differences(before, assoc.merged(before, wanted)) == []


def test_new_association_lists_what_it_sets():
    after = assoc.merged(None, assoc.requested(params(output_s3_bucket="out", output_s3_key_prefix="p")))
    assert assoc.differences(None, after) == ["Name", "DocumentVersion", "Parameters", "Targets",
                                              "ApplyOnlyAtCronInterval", "ComplianceSeverity", "SyncCompliance",
                                              "OutputLocation"]
    assert assoc.request(after, "n")["OutputLocation"] == {"S3Location": {"OutputS3BucketName": "out",
                                                                          "OutputS3KeyPrefix": "p"}}


def test_target_filters_and_summary():
    settings = {"Targets": [{"Key": "tag:Role", "Values": ["web"]}, {"Key": "InstanceIds", "Values": ["i-1"]}]}
    assert assoc.target_filters(settings) == [{"Key": "tag:Role", "Values": ["web"]},
                                              {"Key": "InstanceIds", "Values": ["i-1"]}]
    assert assoc.target_filters({"Targets": [{"Key": "resource-groups:Name", "Values": ["g"]}]}) is None
    assert assoc.describe_targets(settings) == "tag:Role=web, InstanceIds=i-1"
    rows = [{"Status": "Success"}, {"Status": "Failed"}, {"Status": "Cancelled"}, {"Status": "Success"}]
    assert assoc.summarise(rows) == {"total": 4, "by_status": {"Success": 2, "Failed": 1, "Cancelled": 1},
                                     "failed": 2}


def test_snake_settings_for_the_diff():
    snake = assoc.snake_settings(assoc.current(description(OutputLocation={"S3Location": {
        "OutputS3BucketName": "out", "OutputS3KeyPrefix": "p"}})))
    assert snake["targets"] == [{"key": "tag:Role", "values": ["web"]}]
    assert snake["output_location"] == {"s3_bucket": "out", "s3_key_prefix": "p"}
    assert snake["parameters"] == {"commands": ["uptime"]}
    assert assoc.snake_settings(None) == {}


def test_removing_the_schedule_of_a_cron_only_association_is_refused():
    before = assoc.current(description(ScheduleExpression="cron(0 2 ? * SUN *)", ApplyOnlyAtCronInterval=True))
    after = assoc.merged(before, assoc.requested(params(schedule_expression="")))
    assert "apply_only_at_cron_interval is true" in assoc.settings_problem(after)
    assert assoc.settings_problem(before) is None


def test_a_schedule_offset_is_set_compared_and_removed_with_0():
    before = assoc.current(description(ScheduleExpression="cron(0 3 ? * TUE#2 *)", ApplyOnlyAtCronInterval=True))
    after = assoc.merged(before, assoc.requested(params(schedule_offset=5)))
    assert assoc.differences(before, after) == ["ScheduleOffset"] and assoc.settings_problem(after) is None
    assert assoc.request(after, "web-chrony")["ScheduleOffset"] == 5
    assert assoc.snake_settings(after)["schedule_offset"] == 5
    again = assoc.current(description(ScheduleExpression="cron(0 3 ? * TUE#2 *)", ApplyOnlyAtCronInterval=True,
                                      ScheduleOffset=5))
    assert assoc.differences(again, assoc.merged(again, assoc.requested(params(schedule_offset=5)))) == []
    removed = assoc.merged(again, assoc.requested(params(schedule_offset=0)))
    assert assoc.differences(again, removed) == ["ScheduleOffset"] and "ScheduleOffset" not in assoc.request(
        removed, "web-chrony")


def test_a_schedule_offset_needs_apply_only_at_cron_interval_on_the_association():
    before = assoc.current(description(ScheduleExpression="cron(0 3 ? * TUE#2 *)"))
    after = assoc.merged(before, assoc.requested(params(schedule_offset=2)))
    assert "schedule_offset 2 needs apply_only_at_cron_interval true" in assoc.settings_problem(after)
