# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure helpers of bastionless.ssm.ssm_session_info and ssm_session: times, filters, the returned shape,
validation, and paging with the client-side document filter."""

import datetime

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _ssm_session as sessions
from ansible_collections.bastionless.ssm.plugins.modules import ssm_session_info

UTC = datetime.timezone.utc


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-01-31T08:00:00Z", "2025-01-31T08:00:00Z"),
        ("2025-01-31T08:00:00z", "2025-01-31T08:00:00Z"),
        ("2025-01-31T09:30:00+01:00", "2025-01-31T08:30:00Z"),
        ("2025-01-31T08:00:00.123456+00:00", "2025-01-31T08:00:00Z"),
        ("2025-01-31T08:00:00", "2025-01-31T08:00:00Z"),  # no zone: UTC
        ("2025-01-31", "2025-01-31T00:00:00Z"),
        (" 2025-01-31T08:00:00Z ", "2025-01-31T08:00:00Z"),
    ],
)
def test_times_are_sent_in_utc_with_z(text, expected):
    assert sessions.aws_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "31/01/2025", "2025-13-01", ""])
def test_bad_times_raise(text):
    with pytest.raises(ValueError):
        sessions.parse_time(text)


def params(**overrides):
    base = {"state": "all", "session_id": None, "target": None, "owner": None, "status": None,
            "invoked_after": None, "invoked_before": None, "document_name": None, "max_results": None}
    base.update(overrides)
    return base


def test_no_option_no_filter():
    assert sessions.session_filters(params()) == []


def test_every_filter_option():
    assert sessions.session_filters(params(
        session_id="alice-0123", target="i-0123456789abcdef0", owner="arn:aws:iam::123456789012:user/alice",
        status="Terminated", invoked_after="2025-01-31", invoked_before="2025-02-01T12:00:00+02:00",
    )) == [
        {"key": "SessionId", "value": "alice-0123"},
        {"key": "Target", "value": "i-0123456789abcdef0"},
        {"key": "Owner", "value": "arn:aws:iam::123456789012:user/alice"},
        {"key": "Status", "value": "Terminated"},
        {"key": "InvokedAfter", "value": "2025-01-31T00:00:00Z"},
        {"key": "InvokedBefore", "value": "2025-02-01T10:00:00Z"},
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"invoked_after": "last week"}, "invoked_after must be an ISO 8601 date or time"),
        ({"invoked_before": "2025-02-30"}, "invoked_before must be an ISO 8601 date or time"),
        ({"max_results": 0}, "max_results must be 1 or more, not 0"),
    ],
)
def test_bad_input_is_named(overrides, message):
    assert message in ssm_session_info.validate(params(**overrides))


def test_valid_input():
    assert ssm_session_info.validate(params(invoked_after="2025-01-31T08:00:00Z", max_results=5)) is None


def test_a_session_as_returned():
    raw = {
        "SessionId": "alice-0a1b2c3d4e5f67890",
        "Target": "i-0123456789abcdef0",
        "Status": "Terminated",
        "StartDate": datetime.datetime(2025, 1, 31, 8, 0, tzinfo=UTC),
        "EndDate": datetime.datetime(2025, 1, 31, 8, 12, tzinfo=UTC),
        "DocumentName": "AWS-StartPortForwardingSession",
        "Owner": "arn:aws:iam::123456789012:user/alice",
        "Reason": "migration",
        "Details": "",
        "OutputUrl": {"S3OutputUrl": "", "CloudWatchOutputUrl": ""},
        "AccessType": "Standard",
    }
    assert sessions.normalise_session(raw, "history") == {
        "session_id": "alice-0a1b2c3d4e5f67890",
        "target": "i-0123456789abcdef0",
        "status": "Terminated",
        "start_date": "2025-01-31T08:00:00+00:00",
        "end_date": "2025-01-31T08:12:00+00:00",
        "document_name": "AWS-StartPortForwardingSession",
        "owner": "arn:aws:iam::123456789012:user/alice",
        "reason": "migration",
        "details": "",
        "output_url": {"s3_output_url": "", "cloud_watch_output_url": ""},
        "access_type": "Standard",
        "state": "history",
    }


def test_an_active_session_has_no_end_and_empty_defaults():
    raw = {"SessionId": "s", "Target": "i-1", "Status": "Connected", "StartDate": 1738310400.0,
           "DocumentName": "SSM-SessionManagerRunShell", "Owner": "arn"}
    result = sessions.normalise_session(raw, "active")
    assert result["end_date"] is None
    assert result["start_date"] == "2025-01-31T08:00:00+00:00"
    assert (result["reason"], result["details"], result["output_url"]) == ("", "", {})


class PagedClient:
    """describe_sessions over a list, in pages of ``MaxResults``, recording each call's arguments."""

    def __init__(self, items):
        self.items = items
        self.calls = []

    def describe_sessions(self, **kwargs):
        self.calls.append(kwargs)
        start = int(kwargs.get("NextToken") or 0)
        page = self.items[start:start + kwargs["MaxResults"]]
        answer = {"Sessions": page}
        if start + kwargs["MaxResults"] < len(self.items):
            answer["NextToken"] = str(start + kwargs["MaxResults"])
        return answer


def many(n, document="SSM-SessionManagerRunShell"):
    return [{"SessionId": f"s{i}", "DocumentName": document if i % 2 else "AWS-StartPortForwardingSession"}
            for i in range(n)]


def test_every_page_is_read():
    client = PagedClient(many(450))
    found = sessions.describe_sessions(client, "History", [{"key": "Target", "value": "i-1"}])
    assert [s["SessionId"] for s in found] == [f"s{i}" for i in range(450)]
    assert [c.get("NextToken") for c in client.calls] == [None, "200", "400"]
    assert all(c["State"] == "History" and c["Filters"] == [{"key": "Target", "value": "i-1"}] for c in client.calls)


def test_document_filter_and_limit_stop_early():
    client = PagedClient(many(450))
    found = sessions.describe_sessions(client, "Active", [], limit=3, document_name="AWS-StartPortForwardingSession")
    assert [s["SessionId"] for s in found] == ["s0", "s2", "s4"]
    assert len(client.calls) == 1 and "Filters" not in client.calls[0]
