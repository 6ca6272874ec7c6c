"""The joining logic of bastionless.ssm.ssm_audit_info (module_utils/_audit.py), on CloudTrail events shaped as
LookupEvents returns them (CloudTrailEvent parsed)."""

import datetime

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _audit as audit

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
ACCOUNT = "123456789012"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
ONCALL = f"arn:aws:sts::{ACCOUNT}:assumed-role/Oncall/bob"
NODE, DB_NODE = "i-0123456789abcdef0", "i-0fedcba9876543210"


def user(arn=ALICE, ip="198.51.100.7"):
    if ":assumed-role/" in arn:
        identity = {"type": "AssumedRole", "principalId": "AROAEXAMPLE:bob", "arn": arn, "accountId": ACCOUNT,
                    "accessKeyId": "ASIAEXAMPLE", "sessionContext": {"sessionIssuer": {
                        "type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/Oncall", "userName": "Oncall"}}}
    else:
        identity = {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": arn, "accountId": ACCOUNT,
                    "accessKeyId": "AKIAEXAMPLE", "userName": arn.rsplit("/", 1)[-1]}
    return {"userIdentity": identity, "sourceIPAddress": ip, "userAgent": "aws-cli/2.15.0"}


def event(name, time, who=None, request=None, response=None, error=None):
    out = {"eventName": name, "eventSource": "ssm.amazonaws.com", "eventTime": time, "awsRegion": "eu-west-1",
           "requestParameters": request, "responseElements": response, **(who or user())}
    if error:
        out.update(errorCode=error, errorMessage="User: ... is not authorized")
    return out


def start(session, time, who=None, target=NODE, document=None, parameters=None, reason=None):
    request = {"target": target}
    if document:
        request["documentName"] = document
    if parameters is not None:
        request["parameters"] = parameters
    if reason:
        request["reason"] = reason
    return event("StartSession", time, who, request,
                 {"sessionId": session, "tokenValue": "Value hidden due to security reasons.", "streamUrl": "wss://x"})


def terminate(session, time, who=None):
    return event("TerminateSession", time, who, {"sessionId": session}, {"sessionId": session})


def send(command, time, who=None, nodes=(NODE,), targets=None, document="AWS-RunShellScript"):
    request = {"documentName": document, "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    if nodes:
        request["instanceIds"] = list(nodes)
    if targets:
        request["targets"] = targets
    return event("SendCommand", time, who, request, {"command": {"commandId": command,
                                                                 "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"}})


def joined(events, history=None, names=None, details=None, nodes=None, **filters):
    join = audit.AuditJoin(**filters)
    for item in events:
        join.add(item)
    return join.finish(history or {}, names or {}, details or {}, nodes)


# --- times -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("now", NOW),
    ("30m", NOW - datetime.timedelta(minutes=30)),
    ("12h", NOW - datetime.timedelta(hours=12)),
    ("7d", NOW - datetime.timedelta(days=7)),
    (" 2w ", NOW - datetime.timedelta(weeks=2)),
    ("2025-01-31", datetime.datetime(2025, 1, 31, tzinfo=datetime.timezone.utc)),
    ("2025-01-31T08:00:00Z", datetime.datetime(2025, 1, 31, 8, tzinfo=datetime.timezone.utc)),
    ("2025-01-31T09:00:00+01:00", datetime.datetime(2025, 1, 31, 8, tzinfo=datetime.timezone.utc)),
])
def test_parse_when(text, expected):
    assert audit.parse_when(text, NOW, "start_time") == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days", "-7d", "2025-13-01", ""])
def test_parse_when_names_the_option_and_the_forms(text):
    with pytest.raises(ValueError) as caught:
        audit.parse_when(text, NOW, "end_time")
    assert str(caught.value) == (
        "end_time must be 'now', a duration ago such as 30m, 12h, 7d or 2w, or an ISO 8601 date or time such as "
        f"2025-01-31 or 2025-01-31T08:00:00Z, not {text!r}.")


def test_history_gap_only_before_90_days():
    assert audit.history_gap(NOW - datetime.timedelta(days=90), NOW) is None
    message = audit.history_gap(NOW - datetime.timedelta(days=91), NOW)
    assert message.startswith("The range begins at 2024-11-30T12:00:00Z, but CloudTrail's event history "
                              "(LookupEvents) keeps only the last 90 days, back to 2024-12-01T12:00:00Z")
    assert "S3" in message


# --- one event ---------------------------------------------------------------------------------------------


def test_principal_of_a_user_and_of_a_role_session():
    assert audit.principal(user()) == {
        "arn": ALICE, "type": "IAMUser", "name": "alice", "role_arn": None, "account_id": ACCOUNT,
        "access_key_id": "AKIAEXAMPLE", "source_ip": "198.51.100.7", "user_agent": "aws-cli/2.15.0"}
    role = audit.principal(user(ONCALL))
    assert (role["type"], role["name"], role["role_arn"]) == ("AssumedRole", "bob",
                                                              f"arn:aws:iam::{ACCOUNT}:role/Oncall")


@pytest.mark.parametrize("document, parameters, expected", [
    ("AWS-StartPortForwardingSessionToRemoteHost", {"host": ["db.internal"], "portNumber": ["5432"],
                                                    "localPortNumber": ["15432"]},
     {"host": "db.internal", "port": "5432", "local_port": "15432"}),
    ("AWS-StartPortForwardingSession", {"portNumber": ["8080"]}, {"host": "localhost", "port": "8080",
                                                                  "local_port": None}),
    ("AWS-StartPortForwardingSession", {}, {"host": "localhost", "port": "80", "local_port": None}),
    ("AWS-StartSSHSession", None, {"host": "localhost", "port": "22", "local_port": None}),
    ("SSM-SessionManagerRunShell", {}, None),
    ("AWS-StartInteractiveCommand", {"command": ["top"]}, None),
])
def test_forwarding(document, parameters, expected):
    assert audit.forwarding(document, parameters) == expected


def test_reduce_event_ignores_other_events_and_sources():
    assert audit.reduce_event(event("DescribeSessions", "2025-03-01T10:00:00Z")) is None
    assert audit.reduce_event({**start("s-1", "2025-03-01T10:00:00Z"), "eventSource": "ec2.amazonaws.com"}) is None


# --- the join ----------------------------------------------------------------------------------------------


def test_a_session_is_joined_with_its_resume_and_termination():
    result = joined([
        start("alice-1", "2025-03-01T10:00:00Z", reason="incident 4711"),
        event("ResumeSession", "2025-03-01T10:05:00Z", request={"sessionId": "alice-1"}),
        terminate("alice-1", "2025-03-01T10:10:00Z"),
    ], history={"alice-1": {"Status": "Terminated", "EndDate": datetime.datetime(
        2025, 3, 1, 10, 10, 1, tzinfo=datetime.timezone.utc), "OutputUrl": {
        "S3OutputUrl": "https://audit-bucket.s3.amazonaws.com/sessions/alice-1.log",
        "CloudWatchOutputUrl": "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logEventViewer:"
                               "group=/ssm/sessions;stream=alice-1"}}}, names={NODE: "web-1"})
    [session] = result["sessions"]
    assert session["principal"]["arn"] == ALICE and session["node"] == {"id": NODE, "name": "web-1"}
    assert (session["document"], session["reason"], session["start_time"]) == (
        "SSM-SessionManagerRunShell", "incident 4711", "2025-03-01T10:00:00Z")
    assert [r["time"] for r in session["resumed"]] == ["2025-03-01T10:05:00Z"]
    assert (session["ended"], session["status"], session["end_time"]) == ("terminated", "Terminated",
                                                                          "2025-03-01T10:10:01Z")
    assert session["terminated_by"]["arn"] == ALICE
    assert session["transcript"] == {"s3_bucket": "audit-bucket", "s3_key": "sessions/alice-1.log",
                                     "log_group": "/ssm/sessions", "log_stream": "alice-1",
                                     "source": "session history"}


def test_terminated_by_someone_else_and_the_first_termination_counts():
    result = joined([start("alice-1", "2025-03-01T10:00:00Z"),
                     terminate("alice-1", "2025-03-01T10:20:00Z"),
                     terminate("alice-1", "2025-03-01T10:10:00Z", who=user(ONCALL))])
    [session] = result["sessions"]
    assert session["terminated_by"]["arn"] == ONCALL
    assert (session["ended"], session["end_time"]) == ("terminated", "2025-03-01T10:10:00Z")


@pytest.mark.parametrize("history, ended, end", [
    ({"Status": "Connected"}, "open", None),
    ({"Status": "Terminated", "Details": "idle timeout", "EndDate": 1740826800}, "timed_out", "2025-03-01T11:00:00Z"),
    ({"Status": "Terminated", "Details": "maximum session duration", "EndDate": 1740826800}, "timed_out",
     "2025-03-01T11:00:00Z"),
    ({"Status": "Terminated", "Details": "", "EndDate": 1740826800}, "ended", "2025-03-01T11:00:00Z"),
    ({"Status": "Failed", "EndDate": 1740826800}, "failed", "2025-03-01T11:00:00Z"),
    (None, "unknown", None),
])
def test_how_a_session_ended_without_terminate_session(history, ended, end):
    result = joined([start("alice-1", "2025-03-01T10:00:00Z")], history={"alice-1": history} if history else {})
    [session] = result["sessions"]
    assert (session["ended"], session["end_time"], session["terminated_by"]) == (ended, end, None)


def test_a_failed_terminate_session_does_not_end_it():
    result = joined([start("alice-1", "2025-03-01T10:00:00Z"),
                     event("TerminateSession", "2025-03-01T10:01:00Z", user(ONCALL), {"sessionId": "alice-1"},
                           error="AccessDeniedException")], history={"alice-1": {"Status": "Connected"}})
    assert result["sessions"][0]["ended"] == "open" and result["denied"] == []


def test_a_refused_start_is_listed_as_denied_not_as_a_session():
    refused = event("StartSession", "2025-03-01T10:00:00Z", user(f"arn:aws:iam::{ACCOUNT}:user/mallory"),
                    {"target": NODE}, error="AccessDeniedException")
    result = joined([refused])
    assert result["sessions"] == []
    [denied] = result["denied"]
    assert (denied["principal"]["name"], denied["node_ids"], denied["error_code"]) == (
        "mallory", [NODE], "AccessDeniedException")


def test_port_forwarding_session():
    result = joined([start("bob-1", "2025-03-01T10:00:00Z", who=user(ONCALL), target=DB_NODE,
                           document="AWS-StartPortForwardingSessionToRemoteHost",
                           parameters={"host": ["db.internal"], "portNumber": ["5432"]})])
    [session] = result["sessions"]
    assert session["forwarding"] == {"host": "db.internal", "port": "5432", "local_port": None}
    assert session["parameters"] == {"host": ["db.internal"], "portNumber": ["5432"]}


def test_commands_get_their_text_and_nodes_from_run_commands_history():
    result = joined([
        send("c-1", "2025-03-01T10:00:00Z"),
        send("c-2", "2025-03-01T11:00:00Z", nodes=(), targets=[{"key": "tag:Role", "values": ["db"]}]),
    ], names={NODE: "web-1", DB_NODE: "db-1"}, details={
        "c-1": {"Parameters": {"commands": ["uptime"]}, "Status": "Success"},
        "c-2": {"Parameters": {"commands": ["psql -c 'select 1'"]}, "Status": "Failed", "_node_ids": [DB_NODE]},
    })
    second, first = result["commands"]
    assert (first["command_id"], first["commands"], first["status"], first["nodes"]) == (
        "c-1", ["uptime"], "Success", [{"id": NODE, "name": "web-1"}])
    assert (second["command_id"], second["targets"], second["nodes"]) == (
        "c-2", [{"key": "tag:Role", "values": ["db"]}], [{"id": DB_NODE, "name": "db-1"}])


def test_a_command_older_than_run_commands_history_keeps_what_cloudtrail_has():
    [command] = joined([send("c-1", "2025-03-01T10:00:00Z")])["commands"]
    assert (command["commands"], command["parameters"], command["status"]) == (None, None, None)
    assert command["nodes"] == [{"id": NODE, "name": None}]


EVENTS = [
    start("alice-1", "2025-03-01T10:00:00Z"),
    start("bob-1", "2025-03-01T10:30:00Z", who=user(ONCALL), target=DB_NODE,
          document="AWS-StartPortForwardingSessionToRemoteHost", parameters={"host": ["db.internal"]}),
    send("c-1", "2025-03-01T11:00:00Z", nodes=(DB_NODE,)),
]


@pytest.mark.parametrize("filters, nodes, sessions, commands", [
    ({}, None, ["bob-1", "alice-1"], ["c-1"]),
    ({"principals": ["alice"]}, None, ["alice-1"], ["c-1"]),
    ({"principals": [ALICE]}, None, ["alice-1"], ["c-1"]),
    ({"principals": ["bob"]}, None, ["bob-1"], []),
    ({"principals": ["Oncall"]}, None, ["bob-1"], []),
    ({"principals": [f"arn:aws:iam::{ACCOUNT}:role/Oncall"]}, None, ["bob-1"], []),
    ({"principals": ["carol"]}, None, [], []),
    ({"documents": ["AWS-StartPortForwardingSessionToRemoteHost"]}, None, ["bob-1"], []),
    ({"documents": ["SSM-SessionManagerRunShell"]}, None, ["alice-1"], []),
    ({}, ["web-1"], ["alice-1"], []),
    ({}, [DB_NODE], ["bob-1"], ["c-1"]),
    ({"principals": ["alice"]}, ["db-1"], [], ["c-1"]),
])
def test_filters(filters, nodes, sessions, commands):
    result = joined(EVENTS, names={NODE: "web-1", DB_NODE: "db-1"}, nodes=nodes, **filters)
    assert [s["session_id"] for s in result["sessions"]] == sessions
    assert [c["command_id"] for c in result["commands"]] == commands


def test_raw_events_are_not_kept():
    join = audit.AuditJoin()
    for index in range(500):
        join.add(event("DescribeSessions", "2025-03-01T10:00:00Z"))
        join.add(event("ResumeSession", "2025-03-01T10:00:00Z", request={"sessionId": f"gone-{index % 3}"}))
    assert join.events_read == 1000
    assert join.sessions == {} and sum(len(v) for v in join._resumes.values()) == 500  # pylint: disable=protected-access
    assert all(set(r) == {"time", "principal"} for v in join._resumes.values() for r in v)  # pylint: disable=protected-access


# --- transcripts and Run As --------------------------------------------------------------------------------


@pytest.mark.parametrize("url, expected", [
    ({"S3OutputUrl": "https://b.s3.amazonaws.com/p/s-1.log"}, ("b", "p/s-1.log", None, None)),
    ({"S3OutputUrl": "https://s3.eu-west-1.amazonaws.com/b/s-1.log"}, ("b", "s-1.log", None, None)),
    ({"CloudWatchOutputUrl": "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logEventViewer:"
                             "group=%2Fssm%2Fs;stream=s-1"}, (None, None, "/ssm/s", "s-1")),
])
def test_transcript_from_output(url, expected):
    found = audit.transcript_from_output(url)
    assert (found["s3_bucket"], found["s3_key"], found["log_group"], found["log_stream"]) == expected


def test_no_transcript_without_urls():
    assert audit.transcript_from_output({"S3OutputUrl": "", "CloudWatchOutputUrl": ""}) is None


@pytest.mark.parametrize("preferences, document, expected", [
    ({"s3BucketName": "b", "s3KeyPrefix": "/sessions/"}, "SSM-SessionManagerRunShell",
     {"s3_bucket": "b", "s3_key": "sessions/s-1.log", "log_group": None, "log_stream": None, "source": "preferences"}),
    ({"cloudWatchLogGroupName": "/g"}, "SSM-SessionManagerRunShell",
     {"s3_bucket": None, "s3_key": None, "log_group": "/g", "log_stream": "s-1", "source": "preferences"}),
    ({"s3BucketName": "b"}, "AWS-StartPortForwardingSession", None),
    ({}, "SSM-SessionManagerRunShell", None),
])
def test_transcript_from_preferences(preferences, document, expected):
    assert audit.transcript_from_preferences(preferences, "s-1", document) == expected


@pytest.mark.parametrize("preferences, tags, document, expected", [
    ({}, None, "SSM-SessionManagerRunShell", "ssm-user"),
    ({"runAsEnabled": True, "runAsDefaultUser": "ops"}, {"SSMSessionRunAs": "alice_os"},
     "SSM-SessionManagerRunShell", "alice_os"),
    ({"runAsEnabled": "true", "runAsDefaultUser": "ops"}, {}, "SSM-SessionManagerRunShell", "ops"),
    ({"runAsEnabled": True, "runAsDefaultUser": "ops"}, None, "SSM-SessionManagerRunShell", None),
    ({"runAsEnabled": True}, {}, "SSM-SessionManagerRunShell", None),
    ({"runAsEnabled": True, "runAsDefaultUser": "ops"}, {}, "AWS-StartPortForwardingSession", None),
])
def test_run_as_user(preferences, tags, document, expected):
    assert audit.run_as_user(preferences, tags, document) == expected
