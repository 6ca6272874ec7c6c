# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What bastionless.ssm.ssm_association and ssm_association_info share: the State Manager calls both make (one
helper per call, with its retry and error handler, and the loops over their pages), the association as both
return it; and the pure part of ssm_association: input checks, the settings an association should have, and how
they compare with what Systems Manager holds."""

from __future__ import annotations

import re
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
ERRORS = re.compile(r"^([1-9][0-9]*|0|[1-9][0-9]%|[0-9]%|100%)$")
RATE = re.compile(r"^rate\(([1-9][0-9]*) (minute|minutes|hour|hours|day|days)\)$")
CRON = re.compile(r"^cron\((.*)\)$")
TARGET_KEY = re.compile(r"^(InstanceIds|tag-key|tag:.+|resource-groups:Name|resource-groups:ResourceTypeFilters)$")
MIN_RATE_MINUTES = 30
MIN_OFFSET_DAYS, MAX_OFFSET_DAYS = 1, 6  # ScheduleOffset: days after each cron time
UNIT_MINUTES = {"minute": 1, "hour": 60, "day": 1440}
MAX_TARGETS = 5
MAX_NAME = 128
NAME = re.compile(r"^[a-zA-Z0-9_\-.]{3,128}$")

# The settings the module manages, by the name AWS gives them, with the value AWS stores when none is given.
SETTINGS = ("Name", "DocumentVersion", "Parameters", "Targets", "ScheduleExpression", "ApplyOnlyAtCronInterval",
            "ScheduleOffset", "MaxConcurrency", "MaxErrors", "ComplianceSeverity", "SyncCompliance", "OutputLocation")
AWS_DEFAULTS: Dict[str, Any] = {
    "DocumentVersion": "$DEFAULT", "Parameters": {}, "ScheduleExpression": None, "ApplyOnlyAtCronInterval": False,
    "ScheduleOffset": None,
    "MaxConcurrency": None, "MaxErrors": None, "ComplianceSeverity": "UNSPECIFIED", "SyncCompliance": "AUTO",
    "OutputLocation": None,
}


def schedule_problem(expression: Optional[str]) -> Optional[str]:
    """Why a ScheduleExpression is not one State Manager accepts (None when it is, or when none is given)."""
    if expression is None:
        return None
    rate = RATE.match(expression)
    if rate:
        minutes = int(rate.group(1)) * UNIT_MINUTES[rate.group(2).rstrip("s")]
        if minutes < MIN_RATE_MINUTES:
            return (f"schedule_expression {expression!r} runs more often than State Manager allows: a rate must be "
                    f"{MIN_RATE_MINUTES} minutes or more, for example 'rate(30 minutes)'.")
        return None
    cron = CRON.match(expression)
    if cron:
        fields = cron.group(1).split()
        if len(fields) == 7 and fields[0] == "0":  # AWS's optional leading seconds field, which can only be 0
            fields = fields[1:]
        if len(fields) not in (5, 6):
            return (f"schedule_expression {expression!r} has {len(cron.group(1).split())} fields; a cron expression "
                    "has 6 (minutes hours day-of-month month day-of-week year; the year may be left out, and a "
                    "leading seconds field may be 0), for example 'cron(0 2 ? * SUN *)'.")
        if (fields[2] == "?") == (fields[4] == "?"):
            return (f"schedule_expression {expression!r} must have '?' in exactly one of its day-of-month and "
                    "day-of-week fields (the third and the fifth), for example 'cron(0 2 ? * SUN *)' or "
                    "'cron(0 2 1 * ? *)'.")
        return None
    return (f"schedule_expression {expression!r} is neither 'rate(N minutes|hours|days)' nor 'cron(...)'; "
            "for example 'rate(30 minutes)' or 'cron(0 2 ? * SUN *)'.")


def validate(params: Dict[str, Any]) -> Optional[str]:
    """The first problem of the module's input, as one message that names the option and the fix; None if none."""
    name = params.get("name") or ""
    if not NAME.match(name):
        return (f"name {name!r} is not an association name AWS accepts: 3 to {MAX_NAME} letters, digits, '_', '-' "
                "or '.'.")
    if params.get("state", "present") != "present":
        return None
    problem = schedule_problem(params.get("schedule_expression") or None)
    if problem:
        return problem
    if params.get("apply_only_at_cron_interval") and not (params.get("schedule_expression") or "").startswith("cron("):
        return ("apply_only_at_cron_interval needs a cron schedule_expression; set one, or leave "
                "apply_only_at_cron_interval false.")
    offset = params.get("schedule_offset")
    if offset is not None and offset != 0 and not MIN_OFFSET_DAYS <= offset <= MAX_OFFSET_DAYS:
        return (f"schedule_offset {offset} is not a number of days State Manager takes: {MIN_OFFSET_DAYS} to "
                f"{MAX_OFFSET_DAYS}, or 0 to remove the offset.")
    errors = params.get("max_errors")
    if errors and not ERRORS.match(errors):
        if errors.endswith("%") and errors[:-1].isdigit():
            return f"max_errors {errors!r} is over 100%; give a percentage from 0% to 100%, or a count of nodes."
        return f"max_errors {errors!r} is not a count (0, 1, 2, ...) or a percentage (0% to 100%) of the targets."
    concurrency = params.get("max_concurrency")
    if concurrency and not CONCURRENCY.match(concurrency):
        return (f"max_concurrency {concurrency!r} is not a count (1, 2, ...) or a percentage (1% to 100%) of the "
                "targets.")
    targets = params.get("targets")
    if targets is not None:
        if not targets:
            return "targets is empty; give at least one, for example {key: tag:Role, values: [web]}."
        if len(targets) > MAX_TARGETS:
            return f"targets has {len(targets)} entries; an association takes at most {MAX_TARGETS}."
        for target in targets:
            if not TARGET_KEY.match(target["key"]):
                return (f"targets key {target['key']!r} is not one State Manager knows: use InstanceIds, tag-key, "
                        "tag:<name>, resource-groups:Name or resource-groups:ResourceTypeFilters.")
            if not target["values"]:
                return f"targets entry {target['key']!r} has no values."
    if params.get("output_s3_key_prefix") is not None and not params.get("output_s3_bucket"):
        return "output_s3_key_prefix needs output_s3_bucket."
    return None


def settings_problem(settings: Dict[str, Any]) -> Optional[str]:
    """A problem of the settings after the change (the current ones with the wanted ones over them), which the
    options alone do not show; None if none."""
    if settings.get("ApplyOnlyAtCronInterval") and not (settings.get("ScheduleExpression") or "").startswith("cron("):
        return ("apply_only_at_cron_interval is true on this association but its schedule_expression would be "
                f"{settings.get('ScheduleExpression')!r}; give a cron schedule_expression, or set "
                "apply_only_at_cron_interval false.")
    if settings.get("ScheduleOffset") and not settings.get("ApplyOnlyAtCronInterval"):
        # AWS: "To use offsets, you must specify the ApplyOnlyAtCronInterval parameter."
        return (f"schedule_offset {settings['ScheduleOffset']} needs apply_only_at_cron_interval true (and so a cron "
                "schedule_expression); set it, or schedule_offset 0 to remove the offset.")
    return None


def parameters(value: Optional[Dict[str, Any]]) -> Optional[Dict[str, List[str]]]:
    """Document parameters as the API holds them: each a list of strings (a lone value becomes a list of one)."""
    if value is None:
        return None
    out = {}
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        out[str(key)] = [str(v) for v in items]
    return out


def targets(value: Optional[List[Dict[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    if value is None:
        return None
    return [{"Key": t["key"], "Values": [str(v) for v in t["values"]]} for t in value]


def requested(params: Dict[str, Any]) -> Dict[str, Any]:
    """The settings the user set (in AWS's names); an option left unset is not in the result."""
    wanted: Dict[str, Any] = {}
    simple = {"document_name": "Name", "document_version": "DocumentVersion", "schedule_expression": "ScheduleExpression",
              "apply_only_at_cron_interval": "ApplyOnlyAtCronInterval", "schedule_offset": "ScheduleOffset",
              "max_concurrency": "MaxConcurrency", "max_errors": "MaxErrors",
              "compliance_severity": "ComplianceSeverity", "sync_compliance": "SyncCompliance"}
    for option, key in simple.items():
        if params.get(option) is not None:
            wanted[key] = params[option]
    if params.get("schedule_offset") == 0:  # no offset
        wanted["ScheduleOffset"] = None
    for option, key in (("schedule_expression", "ScheduleExpression"), ("max_concurrency", "MaxConcurrency"),
                        ("max_errors", "MaxErrors")):
        if params.get(option) == "":
            wanted[key] = None
    if params.get("parameters") is not None:
        wanted["Parameters"] = parameters(params["parameters"])
    if params.get("targets") is not None:
        wanted["Targets"] = targets(params["targets"])
    if params.get("output_s3_bucket") is not None:
        if params["output_s3_bucket"] == "":
            wanted["OutputLocation"] = None
        else:
            location = {"OutputS3BucketName": params["output_s3_bucket"]}
            if params.get("output_s3_key_prefix"):
                location["OutputS3KeyPrefix"] = params["output_s3_key_prefix"]
            wanted["OutputLocation"] = {"S3Location": location}
    return wanted


def current(description: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The managed settings of an association as DescribeAssociation returns it, AWS's defaults filled in."""
    if description is None:
        return None
    settings = {key: description.get(key, AWS_DEFAULTS.get(key)) for key in SETTINGS}
    location = (settings.get("OutputLocation") or {}).get("S3Location") or {}
    if location:
        settings["OutputLocation"] = {"S3Location": {k: v for k, v in location.items()
                                                     if k in ("OutputS3BucketName", "OutputS3KeyPrefix") and v}}
    else:
        settings["OutputLocation"] = None
    return settings


def _normal(key: str, value: Any) -> Any:
    if key == "Targets" and value is not None:
        return sorted((t["Key"], sorted(t["Values"])) for t in value)
    if key == "Parameters":
        return {k: list(v) for k, v in (value or {}).items()}
    return value


def merged(before: Optional[Dict[str, Any]], wanted: Dict[str, Any]) -> Dict[str, Any]:
    """The settings after the change: the current ones (AWS's defaults for a new association) with the wanted ones
    over them."""
    base = dict(before) if before is not None else {**AWS_DEFAULTS}
    base.update(wanted)
    return base


def differences(before: Optional[Dict[str, Any]], after: Dict[str, Any]) -> List[str]:
    """The settings whose values differ (every wanted one for a new association), in SETTINGS order."""
    if before is None:
        return [key for key in SETTINGS if after.get(key) is not None]
    return [key for key in SETTINGS if _normal(key, before.get(key)) != _normal(key, after.get(key))]


def request(settings: Dict[str, Any], name: str) -> Dict[str, Any]:
    """CreateAssociation's (or, with AssociationId added, UpdateAssociation's) arguments: every setting that has
    a value, since UpdateAssociation resets each optional setting a request leaves out."""
    args = {"AssociationName": name}
    for key in SETTINGS:
        value = settings.get(key)
        if value is None:
            continue
        if key == "ApplyOnlyAtCronInterval" and not value and not settings.get("ScheduleExpression"):
            continue
        args[key] = value
    return args


def target_filters(settings: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """DescribeInstanceInformation filters that find the managed nodes the targets name (AND of the entries, OR
    of the values); None when a target kind (resource groups) cannot be looked up that way."""
    filters = []
    for target in settings.get("Targets") or []:
        key = target["Key"]
        if key.startswith("resource-groups:"):
            return None
        filters.append({"Key": key, "Values": list(target["Values"])})
    return filters


def describe_targets(settings: Dict[str, Any]) -> str:
    return ", ".join(f"{t['Key']}={','.join(t['Values'])}" for t in settings.get("Targets") or [])


def summarise(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts by status of an execution's per-node rows (DescribeAssociationExecutionTargets)."""
    by_status: Dict[str, int] = {}
    for row in rows:
        by_status[row["Status"]] = by_status.get(row["Status"], 0) + 1
    failed = sum(count for status, count in by_status.items() if status not in ("Success", "Pending", "InProgress"))
    return {"total": len(rows), "by_status": by_status, "failed": failed}


def snake_settings(settings: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The settings as the diff shows them (snake_case keys; the document parameters keep their names)."""
    if settings is None:
        return {}
    names = {"Name": "document_name", "DocumentVersion": "document_version", "Parameters": "parameters",
             "Targets": "targets", "ScheduleExpression": "schedule_expression",
             "ApplyOnlyAtCronInterval": "apply_only_at_cron_interval", "ScheduleOffset": "schedule_offset",
             "MaxConcurrency": "max_concurrency",
             "MaxErrors": "max_errors", "ComplianceSeverity": "compliance_severity",
             "SyncCompliance": "sync_compliance", "OutputLocation": "output_location"}
    out = {}
    for key in SETTINGS:
        value = settings.get(key)
        if key == "Targets" and value is not None:
            value = [{"key": t["Key"], "values": list(t["Values"])} for t in value]
        elif key == "OutputLocation" and value is not None:
            location = value.get("S3Location") or {}
            value = {"s3_bucket": location.get("OutputS3BucketName"), "s3_key_prefix": location.get("OutputS3KeyPrefix")}
        out[names[key]] = value
    return out


# --- the State Manager calls both modules make ---------------------------------------------------------------

PAGE_SIZE = 50


class AnsibleSSMAssociationError(AnsibleAWSError):
    pass


class SSMAssociationErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMAssociationError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code(["AssociationDoesNotExist", "404", "NoSuchBucket"])


@SSMAssociationErrorHandler.common_error_handler("list associations")
@AWSRetry.jittered_backoff()
def list_associations_page(client, filters: List[Dict[str, str]], token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"MaxResults": PAGE_SIZE}
    if filters:
        args["AssociationFilterList"] = filters
    if token:
        args["NextToken"] = token
    return client.list_associations(**args)


@SSMAssociationErrorHandler.common_error_handler("describe association")
@AWSRetry.jittered_backoff()
def describe_association(client, association_id: str) -> Dict[str, Any]:
    return client.describe_association(AssociationId=association_id)["AssociationDescription"]


@SSMAssociationErrorHandler.common_error_handler("describe association executions")
@AWSRetry.jittered_backoff()
def describe_executions(client, association_id: str, size: int = PAGE_SIZE) -> List[Dict[str, Any]]:
    return client.describe_association_executions(AssociationId=association_id,
                                                  MaxResults=size)["AssociationExecutions"]


@SSMAssociationErrorHandler.common_error_handler("describe association execution targets")
@AWSRetry.jittered_backoff()
def execution_targets_page(client, association_id: str, execution_id: str, token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"AssociationId": association_id, "ExecutionId": execution_id, "MaxResults": PAGE_SIZE}
    if token:
        args["NextToken"] = token
    return client.describe_association_execution_targets(**args)


def list_associations(client, filters: List[Dict[str, str]]) -> List[Dict[str, Any]]:
    """Every association ListAssociations returns for ``filters`` (each key/value pair must match), all pages."""
    found: List[Dict[str, Any]] = []
    token = None
    while True:
        page = list_associations_page(client, filters, token)
        found.extend(page.get("Associations") or [])
        token = page.get("NextToken")
        if not token:
            return found


def execution_targets(client, association_id: str, execution_id: str) -> List[Dict[str, Any]]:
    """Each node's row of one execution, all pages, by node ID."""
    rows: List[Dict[str, Any]] = []
    token = None
    while True:
        page = execution_targets_page(client, association_id, execution_id, token)
        rows.extend(page.get("AssociationExecutionTargets") or [])
        token = page.get("NextToken")
        if not token:
            return sorted(rows, key=lambda row: row["ResourceId"])


def association_result(description: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """An association as the modules return it: snake_case keys, but the document's parameters keep their names;
    targets as key and values. {} for none."""
    if not description:
        return {}
    parameters = description.get("Parameters")
    result = camel_dict_to_snake_dict({k: v for k, v in description.items() if k != "Parameters"})
    if parameters is not None:
        result["parameters"] = parameters
    result["targets"] = [{"key": t["Key"], "values": t["Values"]} for t in description.get("Targets") or []]
    return result
