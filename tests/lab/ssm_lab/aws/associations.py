"""State Manager associations, which moto does not serve: the API's shapes and errors, and their runs.

An association runs its document through the lab's Run Command engine (``SsmApi._dispatch``): on creation (unless
``ApplyOnlyAtCronInterval``), on every update, on ``StartAssociationsOnce``, for a ``rate()`` schedule each
time the rate has elapsed, and for a ``cron()`` schedule at each of its times, in UTC (``cron.py``; an
``ApplyOnlyAtCronInterval`` association runs only then), or ``ScheduleOffset`` days after each of them. The schedule reads ``Associations.clock()``, the time
plus an offset that the admin API moves forward (``POST /_lab/clock``) so that a test need not wait for a cron
time. Each run is an execution that records the status of every targeted node that was Online when the run
began, honouring MaxConcurrency and MaxErrors as Run Command does (the rollout stops once the errors exceed
MaxErrors; nodes not yet started are Cancelled). A targeted node that comes Online (or is tagged) later gets an
execution of its own for the current version within SCHEDULE_SECONDS. The command behind a run is an ordinary Run
Command command (``ListCommands`` shows it), named by each target's ``OutputSource``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import re
import threading
import time
import uuid

from moto.backends import get_backend

from .. import common
from . import cron, documents
from .registry import Command, Invocation
from .ssmapi import COMMAND_DOCUMENTS, CONCURRENCY, ERRORS, ApiError, SsmApi, _page, _validation

RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
UNITS = {"minute": 60, "hour": 3600, "day": 86400}
MIN_RATE_MINUTES = 30
SCHEDULE_SECONDS = 2.0  # how often the lab looks for runs that are due
ASSOCIATION_VERSION_LIMIT = 1000
# Settings that UpdateAssociation overwrites with their defaults when a request leaves them out, as AWS does.
UPDATE_RESETS = {
    "Parameters": {}, "DocumentVersion": "$DEFAULT", "ScheduleExpression": None, "OutputLocation": None,
    "MaxErrors": None, "MaxConcurrency": None, "ComplianceSeverity": "UNSPECIFIED", "SyncCompliance": "AUTO",
    "ApplyOnlyAtCronInterval": False, "ScheduleOffset": None,
}


def rate_seconds(expression: str | None) -> int | None:
    """The period of a ``rate(N unit)`` schedule in seconds, None for any other schedule."""
    match = RATE.match(expression or "")
    if not match:
        return None
    return int(match.group(1)) * UNITS[match.group(2).rstrip("s")]


def check_schedule(expression: str | None) -> None:
    if expression is None:
        return
    match = RATE.match(expression)
    if match:
        if int(match.group(1)) * UNITS[match.group(2).rstrip("s")] < MIN_RATE_MINUTES * 60:
            raise ApiError("InvalidSchedule", f"Schedule expression {expression} is not valid: a rate must be "
                           f"{MIN_RATE_MINUTES} minutes or more.")
        return
    if expression.startswith("cron("):
        try:
            cron.parse(expression)
        except cron.CronError as error:
            raise ApiError("InvalidSchedule", f"Schedule expression {expression} is not valid: {error}.")
        return
    raise ApiError("InvalidSchedule", f"Schedule expression {expression} is not valid.")


class Associations:
    ACTIONS = ("CreateAssociation", "DescribeAssociation", "UpdateAssociation", "DeleteAssociation",
               "ListAssociations", "ListAssociationVersions", "DescribeAssociationExecutions",
               "DescribeAssociationExecutionTargets", "StartAssociationsOnce")

    def __init__(self, ssm: SsmApi) -> None:
        self.ssm = ssm
        self.registry = ssm.registry
        self.lock = threading.RLock()
        self.items: dict[str, dict] = {}  # AssociationId -> settings (the AssociationVersionInfo fields) and state
        self._scheduler: threading.Thread | None = None
        self.offset = 0.0  # seconds the schedule's clock is ahead of the machine's (POST /_lab/clock)

    def clock(self) -> float:
        """The time the schedule goes by: the machine's, moved forward by ``offset``."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> dict:
        """Move the schedule's clock forward (never back): the runs due by then happen at the next look."""
        if seconds < 0:
            raise ValueError("the schedule's clock only moves forward: give seconds >= 0")
        with self.lock:
            self.offset += seconds
        return {"offset": self.offset, "now": self.clock()}

    def _plan(self, item: dict) -> None:
        """Set when the item's schedule next runs it (``due``, on ``clock()``): a rate's period from now, a cron's
        next time after now; None without a schedule."""
        expression = item["versions"][-1]["settings"].get("ScheduleExpression")
        period = rate_seconds(expression)
        if period is not None:
            item["due"] = self.clock() + period
        elif expression:
            # ScheduleOffset: each cron time, that many days later (the next time whose offset run is still ahead)
            offset = _dt.timedelta(days=int(item["versions"][-1]["settings"].get("ScheduleOffset") or 0))
            moment = _dt.datetime.fromtimestamp(self.clock(), _dt.timezone.utc) - offset
            upcoming = cron.parse(expression).next_after(moment)
            item["due"] = None if upcoming is None else (upcoming + offset).timestamp()
        else:
            item["due"] = None

    def handles(self, action: str) -> bool:
        return action in self.ACTIONS

    def handler(self, action: str):
        return getattr(self, "action_" + action)

    # --- validation ----------------------------------------------------------------------------------------
    def _settings(self, body: dict, base: dict) -> dict:
        settings = dict(base)
        for key in ("Name", "DocumentVersion", "Parameters", "Targets", "ScheduleExpression", "OutputLocation",
                    "AssociationName", "MaxErrors", "MaxConcurrency", "ComplianceSeverity", "SyncCompliance",
                    "ApplyOnlyAtCronInterval", "ScheduleOffset", "InstanceId"):
            if key in body:
                settings[key] = body[key]
        document = settings.get("Name") or ""
        if document not in COMMAND_DOCUMENTS:
            raise ApiError("InvalidDocument", f"Document with name {document} does not exist.")
        if settings.get("DocumentVersion") not in (None, "$DEFAULT", "$LATEST", "1"):
            raise ApiError("InvalidDocumentVersion", f"The document version {settings['DocumentVersion']} is not valid.")
        try:
            documents.check(document, settings.get("Parameters") or {})
        except documents.ParameterError as error:
            raise ApiError("InvalidParameters", str(error))
        check_schedule(settings.get("ScheduleExpression"))
        if settings.get("ApplyOnlyAtCronInterval") and not (settings.get("ScheduleExpression") or "").startswith("cron("):
            # AWS: ApplyOnlyAtCronInterval "isn't supported for rate expressions"
            raise ApiError("InvalidParameters", "ApplyOnlyAtCronInterval requires a cron ScheduleExpression.")
        offset = settings.get("ScheduleOffset")
        if offset is not None:
            if not isinstance(offset, int) or not 1 <= offset <= 6:
                raise _validation(f"1 validation error detected: Value '{offset}' at 'scheduleOffset' failed to "
                                  "satisfy constraint: Member must have value between 1 and 6")
            if not settings.get("ApplyOnlyAtCronInterval"):
                # AWS: "To use offsets, you must specify the ApplyOnlyAtCronInterval parameter."
                raise ApiError("InvalidParameters", "ScheduleOffset requires ApplyOnlyAtCronInterval and a cron "
                               "ScheduleExpression.")
        for field, pattern, name in (("MaxConcurrency", CONCURRENCY, "maxConcurrency"),
                                     ("MaxErrors", ERRORS, "maxErrors")):
            value = settings.get(field)
            if value is not None and not pattern.match(str(value)):
                raise _validation(f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
                                  f"constraint: Member must satisfy regular expression pattern: {pattern.pattern}")
        if bool(settings.get("InstanceId")) == bool(settings.get("Targets")):
            raise _validation("Specify either InstanceId or Targets.")
        for target in settings.get("Targets") or []:
            key = target.get("Key", "")
            if not (key in ("InstanceIds", "tag-key") or key.startswith("tag:")) or not target.get("Values"):
                raise ApiError("InvalidTarget", f"The target key {key} is not valid or has no values.")
        location = ((settings.get("OutputLocation") or {}).get("S3Location") or {})
        bucket = location.get("OutputS3BucketName")
        if settings.get("OutputLocation") is not None:
            s3 = get_backend("s3")[self.registry.account_id]["aws"]
            if not bucket or bucket not in s3.buckets:
                raise ApiError("InvalidOutputLocation", f"The output location is not valid or does not exist: "
                               f"bucket {bucket}.")
        return settings

    def _find(self, body: dict) -> dict:
        association_id = body.get("AssociationId")
        with self.lock:
            item = self.items.get(association_id) if association_id else None
            if item is None and not association_id and body.get("Name") and body.get("InstanceId"):
                item = next((i for i in self.items.values() if i["settings"].get("Name") == body["Name"]
                             and i["settings"].get("InstanceId") == body["InstanceId"]), None)
        if item is None:
            raise ApiError("AssociationDoesNotExist", "The specified association does not exist.")
        return item

    # --- shapes --------------------------------------------------------------------------------------------
    @staticmethod
    def _version_info(item: dict, version: dict) -> dict:
        info = {"AssociationId": item["id"], "AssociationVersion": str(version["version"]),
                "CreatedDate": version["created"]}
        info.update({k: copy.deepcopy(v) for k, v in version["settings"].items() if v is not None and k != "InstanceId"})
        return info

    def _overview(self, item: dict) -> dict:
        last = item["executions"][-1] if item["executions"] else None
        if last is None or last["status"] in ("Pending", "InProgress"):
            return {"Status": "Pending", "DetailedStatus": "Creating" if last is None else "InProgress",
                    "AssociationStatusAggregatedCount": {}}
        counts = self._counts(last)
        return {"Status": "Success" if last["status"] == "Success" else "Failed",
                "DetailedStatus": last["status"], "AssociationStatusAggregatedCount": counts}

    @staticmethod
    def _counts(execution: dict) -> dict:
        counts: dict[str, int] = {}
        for target in execution["targets"].values():
            counts[target["status"]] = counts.get(target["status"], 0) + 1
        return counts

    def _description(self, item: dict, version: dict | None = None) -> dict:
        version = version or item["versions"][-1]
        out = self._version_info(item, version)
        out.pop("CreatedDate")
        out.update({"Date": item["created"], "LastUpdateAssociationDate": version["created"],
                    "Overview": self._overview(item),
                    "Status": {"Date": item["created"], "Name": "Associated", "Message": f"Associated with {version['settings']['Name']}"}})
        out.setdefault("DocumentVersion", "$DEFAULT")
        if version["settings"].get("InstanceId"):
            out["InstanceId"] = version["settings"]["InstanceId"]
        if item["last_run"]:
            out["LastExecutionDate"] = item["last_run"]
        if item["last_success"]:
            out["LastSuccessfulExecutionDate"] = item["last_success"]
        return out

    @staticmethod
    def _execution_json(item: dict, execution: dict) -> dict:
        counts = Associations._counts(execution)
        return {"AssociationId": item["id"], "AssociationVersion": str(execution["version"]),
                "ExecutionId": execution["id"], "Status": execution["status"],
                "DetailedStatus": execution["detailed"], "CreatedTime": execution["created"],
                "LastExecutionDate": execution["ended"] or execution["created"],
                "ResourceCountByStatus": "{" + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + "}"}

    # --- actions -------------------------------------------------------------------------------------------
    def action_CreateAssociation(self, body: dict, authorization: str) -> dict:
        settings = self._settings(body, {"DocumentVersion": "$DEFAULT", "ComplianceSeverity": "UNSPECIFIED",
                                         "SyncCompliance": "AUTO", "ApplyOnlyAtCronInterval": False,
                                         "Parameters": {}})
        with self.lock:
            for other in self.items.values():
                current = other["versions"][-1]["settings"]
                same_name = settings.get("AssociationName") and current.get("AssociationName") == settings["AssociationName"]
                same_work = (current.get("Name") == settings["Name"] and current.get("Targets") == settings.get("Targets")
                             and current.get("InstanceId") == settings.get("InstanceId"))
                if same_name or same_work:
                    raise ApiError("AssociationAlreadyExists", "The specified association already exists.")
            now = time.time()
            item = {"id": str(uuid.uuid4()), "created": now, "versions": [{"version": 1, "created": now,
                                                                          "settings": settings}],
                    "executions": [], "last_run": None, "last_success": None, "region": self.ssm._region(authorization),
                    "due": None}
            self._plan(item)
            self.items[item["id"]] = item
        if not settings.get("ApplyOnlyAtCronInterval"):
            self._run(item)
        self._ensure_scheduler()
        return {"AssociationDescription": self._description(item)}

    def action_UpdateAssociation(self, body: dict, authorization: str) -> dict:
        item = self._find(body)
        with self.lock:
            current = item["versions"][-1]
            if body.get("AssociationVersion") not in (None, "$LATEST", str(current["version"])):
                raise ApiError("InvalidAssociationVersion", f"The association version {body['AssociationVersion']} "
                               "is not the latest version.")
            if len(item["versions"]) >= ASSOCIATION_VERSION_LIMIT:
                raise ApiError("AssociationVersionLimitExceeded", "The association has too many versions.")
            base = {**current["settings"], **UPDATE_RESETS}
            settings = self._settings(body, base)
            item["versions"].append({"version": current["version"] + 1, "created": time.time(), "settings": settings})
            self._plan(item)
        if not settings.get("ApplyOnlyAtCronInterval"):
            self._run(item)
        self._ensure_scheduler()
        return {"AssociationDescription": self._description(item)}

    def action_DescribeAssociation(self, body: dict, authorization: str) -> dict:
        item = self._find(body)
        wanted = body.get("AssociationVersion")
        if wanted not in (None, "$LATEST"):
            versions = [v for v in item["versions"] if str(v["version"]) == str(wanted)]
            if not versions:
                raise ApiError("InvalidAssociationVersion", f"The association version {wanted} does not exist.")
            return {"AssociationDescription": self._description(item, versions[0])}
        return {"AssociationDescription": self._description(item)}

    def action_DeleteAssociation(self, body: dict, authorization: str) -> dict:
        item = self._find(body)
        with self.lock:
            self.items.pop(item["id"], None)
        return {}

    def action_ListAssociations(self, body: dict, authorization: str) -> dict:
        with self.lock:
            items = sorted(self.items.values(), key=lambda i: i["created"])
        rows = []
        for item in items:
            settings = item["versions"][-1]["settings"]
            row = {"Name": settings["Name"], "AssociationId": item["id"],
                   "AssociationVersion": str(item["versions"][-1]["version"]),
                   "DocumentVersion": settings.get("DocumentVersion") or "$DEFAULT",
                   "Targets": copy.deepcopy(settings.get("Targets") or []), "Overview": self._overview(item)}
            for key in ("ScheduleExpression", "AssociationName", "InstanceId"):
                if settings.get(key):
                    row[key] = settings[key]
            if item["last_run"]:
                row["LastExecutionDate"] = item["last_run"]
            if all(self._list_match(row, f.get("key"), f.get("value", "")) for f in body.get("AssociationFilterList") or []):
                rows.append(row)
        chunk, extra = _page(rows, body, 50, 1, 50)
        return {"Associations": chunk, **extra}

    @staticmethod
    def _list_match(row: dict, key: str, value: str) -> bool:
        if key in ("Name", "AssociationId", "AssociationName", "InstanceId"):
            return row.get(key) == value
        if key == "AssociationStatusName":
            return row["Overview"]["Status"] == value
        raise ApiError("InvalidFilterKey", f"The filter key {key} is not supported by the lab.")

    def action_ListAssociationVersions(self, body: dict, authorization: str) -> dict:
        item = self._find({"AssociationId": body.get("AssociationId")})
        rows = [self._version_info(item, v) for v in reversed(item["versions"])]
        chunk, extra = _page(rows, body, 50, 1, 50)
        return {"AssociationVersions": chunk, **extra}

    def action_DescribeAssociationExecutions(self, body: dict, authorization: str) -> dict:
        item = self._find({"AssociationId": body.get("AssociationId")})
        rows = []
        for execution in reversed(item["executions"]):
            keep = True
            for f in body.get("Filters") or []:
                key, value = f.get("Key"), f.get("Value")
                if key == "ExecutionId":
                    keep = keep and execution["id"] == value
                elif key == "Status":
                    keep = keep and execution["status"] == value
                else:
                    raise ApiError("InvalidFilterKey", f"The filter key {key} is not supported by the lab.")
            if keep:
                rows.append(self._execution_json(item, execution))
        chunk, extra = _page(rows, body, 50, 1, 50)
        return {"AssociationExecutions": chunk, **extra}

    def action_DescribeAssociationExecutionTargets(self, body: dict, authorization: str) -> dict:
        item = self._find({"AssociationId": body.get("AssociationId")})
        execution = next((e for e in item["executions"] if e["id"] == body.get("ExecutionId")), None)
        if execution is None:
            raise ApiError("AssociationExecutionDoesNotExist", "The specified execution ID does not exist.")
        rows = []
        for node_id, target in execution["targets"].items():
            row = {"AssociationId": item["id"], "AssociationVersion": str(execution["version"]),
                   "ExecutionId": execution["id"], "ResourceId": node_id, "ResourceType": "ManagedInstance",
                   "Status": target["status"], "DetailedStatus": target["detailed"],
                   "LastExecutionDate": target["ended"] or execution["created"],
                   "OutputSource": {"OutputSourceId": execution["command"], "OutputSourceType": "RunCommand"}}
            fields = {"Status": row["Status"], "ResourceId": node_id, "ResourceType": "ManagedInstance"}
            if all(fields.get(f.get("Key")) == f.get("Value") for f in body.get("Filters") or []):
                rows.append(row)
        chunk, extra = _page(rows, body, 50, 1, 50)
        return {"AssociationExecutionTargets": chunk, **extra}

    def action_StartAssociationsOnce(self, body: dict, authorization: str) -> dict:
        ids = body.get("AssociationIds") or []
        with self.lock:
            unknown = [i for i in ids if i not in self.items]
        if not ids or unknown:
            raise ApiError("InvalidAssociation", f"The associations {unknown} do not exist.")
        for association_id in ids:
            self._run(self.items[association_id])
        return {}

    # --- runs ----------------------------------------------------------------------------------------------
    def _targets(self, item: dict, settings: dict) -> list[str]:
        """The Online nodes the association targets now (in its region), in the lab's order."""
        online = {node.id: node for node, status in self.ssm._registered(item["region"])
                  if status == "Online" and node.kind != "record"}
        if settings.get("InstanceId"):
            return [settings["InstanceId"]] if settings["InstanceId"] in online else []
        chosen = list(online)
        for target in settings.get("Targets") or []:
            key, values = target.get("Key", ""), target.get("Values") or []
            if key == "InstanceIds":
                chosen = [i for i in chosen if i in values]
            elif key == "tag-key":
                chosen = [i for i in chosen if any(k in values for k in self.ssm._tags(online[i]))]
            else:
                chosen = [i for i in chosen if self.ssm._tags(online[i]).get(key[4:]) in values]
        return chosen

    def _run(self, item: dict, only: list[str] | None = None) -> dict:
        with self.lock:
            version = item["versions"][-1]
            settings = version["settings"]
            ids = [i for i in self._targets(item, settings) if only is None or i in only]
            location = (settings.get("OutputLocation") or {}).get("S3Location") or {}
            command = Command(
                id=str(uuid.uuid4()), document=settings["Name"],
                parameters=documents.filled(settings["Name"], copy.deepcopy(settings.get("Parameters") or {})),
                instance_ids=list(ids), targets=[], comment=f"State Manager association {item['id']}",
                max_concurrency=str(settings.get("MaxConcurrency") or "100%"),
                max_errors=str(settings.get("MaxErrors") or "100%"),
                timeout_seconds=3600, output_bucket=location.get("OutputS3BucketName", ""),
                output_prefix=location.get("OutputS3KeyPrefix", ""), cloudwatch={})
            for node_id in ids:
                command.invocations[node_id] = Invocation(command.id, node_id)
            now = time.time()
            execution = {"id": str(uuid.uuid4()), "version": version["version"], "created": now, "ended": None,
                         "status": "InProgress" if ids else "Success", "detailed": "InProgress" if ids else "Success",
                         "command": command.id,
                         "targets": {i: {"status": "Pending", "detailed": "Pending", "ended": None} for i in ids}}
            item["executions"].append(execution)
            item["last_run"] = now
            if rate_seconds(settings.get("ScheduleExpression")) is not None:
                item["due"] = self.clock() + rate_seconds(settings["ScheduleExpression"])
            if not ids:
                execution["ended"] = now
                item["last_success"] = now
                return execution
        with self.registry.lock:
            self.registry.commands[command.id] = command
        self.ssm.messages.soon(lambda: common.spawn(self._execute(item, execution, command)))
        return execution

    async def _execute(self, item: dict, execution: dict, command: Command) -> None:
        async def watch() -> None:
            while execution["ended"] is None:
                self._copy_statuses(execution, command)
                await asyncio.sleep(0.2)

        watcher = common.spawn(watch())
        try:
            await self.ssm._dispatch(command)
        finally:
            with self.lock:
                self._copy_statuses(execution, command)
                failed = command.status != "Success"
                execution["status"] = execution["detailed"] = "Failed" if failed else "Success"
                execution["ended"] = time.time()
                if not failed:
                    item["last_success"] = execution["ended"]
            watcher.cancel()

    @staticmethod
    def _copy_statuses(execution: dict, command: Command) -> None:
        for node_id, invocation in command.invocations.items():
            target = execution["targets"][node_id]
            target["status"], target["detailed"] = invocation.status, invocation.details
            target["ended"] = invocation.ended

    # --- schedule ------------------------------------------------------------------------------------------
    def _ensure_scheduler(self) -> None:
        with self.lock:
            if self._scheduler is None:
                self._scheduler = threading.Thread(target=self._schedule_loop, name="associations", daemon=True)
                self._scheduler.start()

    def _schedule_loop(self) -> None:
        """Every SCHEDULE_SECONDS: run the associations whose schedule is due (a rate elapsed, a cron time
        reached; a cron association that missed several times runs once), and run the current version of each
        association on the targeted nodes that are Online now and have not run it (nodes that were away, or were
        tagged, since its last run), as AWS applies an association to a node when the node becomes a target."""
        while True:
            time.sleep(SCHEDULE_SECONDS)
            now = self.clock()
            due, fresh = [], []
            with self.lock:
                for item in list(self.items.values()):
                    version = item["versions"][-1]
                    if item["due"] is not None and now >= item["due"]:
                        self._plan(item)  # a cron's next time; a rate's is set again by the run
                        due.append(item)
                        continue
                    runs = [e for e in item["executions"] if e["version"] == version["version"]]
                    if not runs:  # ApplyOnlyAtCronInterval: not run yet
                        continue
                    covered = {node_id for e in runs for node_id in e["targets"]}
                    missing = [i for i in self._targets(item, version["settings"]) if i not in covered]
                    if missing:
                        fresh.append((item, missing))
            for item in due:
                self._run(item)
            for item, missing in fresh:
                self._run(item, only=missing)
