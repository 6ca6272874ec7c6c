"""CloudTrail's event history in the lab (``ssm_lab.aws.cloudtrail``): two IAM users open sessions (one forwards a
port to a remote host), one session is terminated by another principal, one user runs a command; LookupEvents
returns each call with the fields AWS fills, filters by one lookup attribute, a time range and pages, and refuses
what AWS refuses.

Over real HTTP with boto3 against the shared lab; the users are this module's own."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
SSM = {"AttributeKey": "EventSource", "AttributeValue": "ssm.amazonaws.com"}


class User:
    def __init__(self, lab, name: str) -> None:
        iam = lab.client("iam")
        self.name = name
        created = iam.create_user(UserName=name)["User"]
        self.arn, self.user_id = created["Arn"], created["UserId"]
        iam.put_user_policy(UserName=name, PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.key = key["AccessKeyId"]
        self.ssm = lab.client("ssm", key["AccessKeyId"], key["SecretAccessKey"])
        self.cloudtrail = lab.client("cloudtrail", key["AccessKeyId"], key["SecretAccessKey"])


def _events(client, **request) -> list:
    """Every event of a lookup, page by page, its CloudTrailEvent parsed."""
    found = []
    for page in client.get_paginator("lookup_events").paginate(**request):
        for event in page["Events"]:
            found.append({**event, "detail": json.loads(event["CloudTrailEvent"])})
    return found


@pytest.fixture(scope="module")
def trail(main_lab):
    lab = main_lab
    token = secrets.token_hex(3)
    began = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    alice, bob = User(lab, f"alice{token}"), User(lab, f"bob{token}")
    shell_node, db_node = lab.ec2_ids[0], lab.ec2_ids[1]
    shell = alice.ssm.start_session(Target=shell_node, Reason="look at the logs")
    forward = bob.ssm.start_session(Target=db_node, DocumentName="AWS-StartPortForwardingSessionToRemoteHost",
                                    Parameters={"host": ["db.internal"], "portNumber": ["5432"],
                                                "localPortNumber": ["15432"]})
    alice.ssm.resume_session(SessionId=shell["SessionId"])
    lab.ssm.terminate_session(SessionId=forward["SessionId"])  # the lab's administrator ends bob's session
    alice.ssm.terminate_session(SessionId=shell["SessionId"])
    command = alice.ssm.send_command(InstanceIds=[shell_node], DocumentName="AWS-RunShellScript",
                                     Parameters={"commands": ["uptime"]})["Command"]
    events = [e for e in _events(lab.client("cloudtrail"), LookupAttributes=[SSM], StartTime=began)
              if e["Username"] in (alice.name, bob.name, "moto")]
    return {"lab": lab, "alice": alice, "bob": bob, "shell": shell, "forward": forward, "command": command,
            "events": events, "began": began, "shell_node": shell_node, "db_node": db_node}


def _one(trail, name: str, **where) -> dict:
    found = [e for e in trail["events"] if e["EventName"] == name
             and all(e["detail"]["requestParameters"].get(k) == v for k, v in where.items())]
    assert len(found) == 1, [e["detail"] for e in trail["events"]]
    return found[0]


def test_start_session_is_recorded_with_who_where_and_what(trail):
    alice = trail["alice"]
    event = _one(trail, "StartSession", target=trail["shell_node"])
    detail = event["detail"]
    assert (event["Username"], event["AccessKeyId"], event["EventSource"]) == (alice.name, alice.key,
                                                                                "ssm.amazonaws.com")
    identity = detail["userIdentity"]
    assert (identity["type"], identity["arn"], identity["userName"], identity["accessKeyId"],
            identity["accountId"]) == ("IAMUser", alice.arn, alice.name, alice.key, ACCOUNT)
    assert identity["principalId"] == alice.user_id
    assert detail["requestParameters"] == {"target": trail["shell_node"], "reason": "look at the logs"}
    assert detail["responseElements"]["sessionId"] == trail["shell"]["SessionId"]
    assert detail["responseElements"]["tokenValue"] == "Value hidden due to security reasons."
    assert detail["responseElements"]["streamUrl"] == trail["shell"]["StreamUrl"]
    assert trail["shell"]["TokenValue"] not in event["CloudTrailEvent"]
    assert (detail["eventSource"], detail["eventName"], detail["awsRegion"], detail["eventType"],
            detail["readOnly"], detail["managementEvent"], detail["eventCategory"],
            detail["recipientAccountId"]) == ("ssm.amazonaws.com", "StartSession", "us-east-1", "AwsApiCall", False,
                                              True, "Management", ACCOUNT)
    assert detail["sourceIPAddress"] == "127.0.0.1" and "Boto3" in detail["userAgent"]
    assert detail["eventID"] == event["EventId"] and detail["requestID"]
    assert dt.datetime.strptime(detail["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc) >= trail["began"].replace(microsecond=0)
    assert {(r["ResourceType"], r["ResourceName"]) for r in event["Resources"]} == {
        ("AWS::EC2::Instance", trail["shell_node"]), ("AWS::SSM::Document", "SSM-SessionManagerRunShell")}


def test_port_forwarding_to_a_remote_host_records_host_and_ports(trail):
    event = _one(trail, "StartSession", target=trail["db_node"])
    assert event["Username"] == trail["bob"].name
    assert event["detail"]["requestParameters"] == {
        "target": trail["db_node"], "documentName": "AWS-StartPortForwardingSessionToRemoteHost",
        "parameters": {"host": ["db.internal"], "portNumber": ["5432"], "localPortNumber": ["15432"]}}


def test_resume_and_terminate_name_the_session_and_who_ended_it(trail):
    resume = _one(trail, "ResumeSession", sessionId=trail["shell"]["SessionId"])
    assert resume["Username"] == trail["alice"].name
    assert resume["detail"]["responseElements"]["tokenValue"] == "Value hidden due to security reasons."
    ended_by_admin = _one(trail, "TerminateSession", sessionId=trail["forward"]["SessionId"])
    assert ended_by_admin["detail"]["userIdentity"]["arn"] == f"arn:aws:sts::{ACCOUNT}:user/moto"
    assert ended_by_admin["detail"]["responseElements"] == {"sessionId": trail["forward"]["SessionId"]}
    ended_by_owner = _one(trail, "TerminateSession", sessionId=trail["shell"]["SessionId"])
    assert ended_by_owner["Username"] == trail["alice"].name


def test_send_command_hides_its_parameters_as_aws_does(trail):
    event = _one(trail, "SendCommand", documentName="AWS-RunShellScript")
    detail = event["detail"]
    assert detail["requestParameters"] == {"instanceIds": [trail["shell_node"]], "documentName": "AWS-RunShellScript",
                                           "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    command = detail["responseElements"]["command"]
    assert (command["commandId"], command["parameters"]) == (trail["command"]["CommandId"],
                                                             "HIDDEN_DUE_TO_SECURITY_REASONS")
    assert "uptime" not in event["CloudTrailEvent"]


def test_lookup_by_user_name_and_by_resource(trail):
    lab, bob = trail["lab"], trail["bob"]
    mine = _events(lab.client("cloudtrail"), LookupAttributes=[{"AttributeKey": "Username",
                                                                "AttributeValue": bob.name}])
    assert {e["EventName"] for e in mine} >= {"StartSession"} and {e["Username"] for e in mine} == {bob.name}
    by_node = _events(lab.client("cloudtrail"), StartTime=trail["began"], LookupAttributes=[
        {"AttributeKey": "ResourceName", "AttributeValue": trail["db_node"]}])
    assert [e["EventName"] for e in by_node if e["Username"] == bob.name] == ["StartSession"]


def test_management_calls_of_other_services_are_recorded_and_data_events_are_not(trail):
    lab = trail["lab"]
    iam = _events(lab.client("cloudtrail"), StartTime=trail["began"], LookupAttributes=[
        {"AttributeKey": "EventSource", "AttributeValue": "iam.amazonaws.com"}])
    created = [e for e in iam if e["EventName"] == "CreateUser"]
    assert {e["detail"]["requestParameters"]["userName"] for e in created} >= {trail["alice"].name, trail["bob"].name}
    keys = [e for e in iam if e["EventName"] == "CreateAccessKey"]
    assert keys and all(e["detail"]["responseElements"] is None for e in keys)  # the secret key is never recorded
    bucket = f"audit-{secrets.token_hex(3)}"
    s3 = lab.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"x")
    names = [e["EventName"] for e in _events(lab.client("cloudtrail"), StartTime=trail["began"], LookupAttributes=[
        {"AttributeKey": "EventSource", "AttributeValue": "s3.amazonaws.com"}])
        if e["detail"]["requestParameters"]["bucketName"] == bucket]
    assert names == ["CreateBucket"]


def test_newest_first_and_paged(trail):
    client = trail["lab"].client("cloudtrail")
    first = client.lookup_events(LookupAttributes=[SSM], StartTime=trail["began"], MaxResults=2)
    assert len(first["Events"]) == 2 and first["NextToken"]
    second = client.lookup_events(LookupAttributes=[SSM], StartTime=trail["began"], MaxResults=2,
                                  NextToken=first["NextToken"])
    times = [e["EventTime"] for e in first["Events"] + second["Events"]]
    assert times == sorted(times, reverse=True)
    ids = [e["EventId"] for e in first["Events"] + second["Events"]]
    assert len(set(ids)) == 4
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert client.lookup_events(StartTime=later)["Events"] == []


@pytest.mark.parametrize("request_, code", [
    ({"LookupAttributes": [SSM, {"AttributeKey": "EventName", "AttributeValue": "StartSession"}]},
     "InvalidLookupAttributesException"),
    ({"MaxResults": 51}, "InvalidMaxResultsException"),
    ({"StartTime": dt.datetime(2030, 1, 2, tzinfo=dt.timezone.utc),
      "EndTime": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)}, "InvalidTimeRangeException"),
    ({"NextToken": "not-a-token"}, "InvalidNextTokenException"),
])
def test_what_aws_refuses(trail, request_, code):
    with pytest.raises(ClientError) as caught:
        trail["lab"].client("cloudtrail").lookup_events(**request_)
    assert caught.value.response["Error"]["Code"] == code


def test_lookups_are_counted_and_throttled_like_every_call(trail):
    lab = trail["lab"]
    client = lab.client("cloudtrail", config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    before = lab.api_calls()["calls"].get("cloudtrail:LookupEvents", 0)
    client.lookup_events(MaxResults=1)
    assert lab.api_calls()["calls"]["cloudtrail:LookupEvents"] == before + 1
    try:
        lab.cli("faults", "--throttle-rate", "1")
        with pytest.raises(ClientError) as caught:
            client.lookup_events(MaxResults=1)
        assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    finally:
        lab.cli("faults", "--throttle-rate", "0")
    assert client.lookup_events(MaxResults=1)["Events"]
