# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Session Manager sessions (DescribeSessions, TerminateSession) for ssm_session_info and ssm_session.

Internal to bastionless.ssm: no compatibility promise.
"""

import datetime
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict

from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

PAGE_SIZE = 200
ACTIVE_STATUSES = ("Connecting", "Connected", "Disconnected", "Terminating")


class AnsibleSSMSessionError(AnsibleAWSError):
    pass


class SSMSessionErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsibleSSMSessionError


# --- pure helpers ----------------------------------------------------------------------------------------


def parse_time(value: str) -> datetime.datetime:
    """An ISO 8601 date or time (``Z`` allowed, no zone = UTC) as an aware datetime; ValueError if it is not."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def aws_time(value: str) -> str:
    """The form DescribeSessions' InvokedAfter/InvokedBefore filters take: UTC, to the second, with Z."""
    return parse_time(value).astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(value: Any) -> Optional[str]:
    """ISO 8601 for a botocore datetime or an epoch; None for nothing."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).isoformat()
    return str(value)


def session_filters(params: Dict[str, Any]) -> List[Dict[str, str]]:
    """DescribeSessions filters for the options session_id, target, owner, status, invoked_after/before."""
    filters = []
    for option, key in (("session_id", "SessionId"), ("target", "Target"), ("owner", "Owner"), ("status", "Status")):
        if params.get(option):
            filters.append({"key": key, "value": params[option]})
    for option, key in (("invoked_after", "InvokedAfter"), ("invoked_before", "InvokedBefore")):
        if params.get(option):
            filters.append({"key": key, "value": aws_time(params[option])})
    return filters


def normalise_session(session: Dict[str, Any], state: str) -> Dict[str, Any]:
    """A DescribeSessions entry as the modules return it: snake_case, dates in ISO 8601, ``state`` added."""
    result = camel_dict_to_snake_dict(session)
    result["state"] = state
    result["start_date"] = iso(session.get("StartDate"))
    result["end_date"] = iso(session.get("EndDate"))
    result.setdefault("reason", "")
    result.setdefault("details", "")
    result.setdefault("output_url", {})
    return result


# --- AWS calls -------------------------------------------------------------------------------------------


@SSMSessionErrorHandler.common_error_handler("describe sessions")
@AWSRetry.jittered_backoff()
def describe_sessions_page(client, state: str, filters: List[Dict[str, str]], size: int,
                           token: Optional[str]) -> Dict[str, Any]:
    args: Dict[str, Any] = {"State": state, "MaxResults": size}
    if filters:
        args["Filters"] = filters
    if token:
        args["NextToken"] = token
    return client.describe_sessions(**args)


def describe_sessions(client, state: str, filters: List[Dict[str, str]], limit: Optional[int] = None,
                      document_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """Every session of ``state`` (Active or History) matching the filters (and the document), newest first,
    at most ``limit``."""
    found: List[Dict[str, Any]] = []
    token = None
    while True:
        page = describe_sessions_page(client, state, filters, PAGE_SIZE, token)
        for session in page.get("Sessions") or []:
            if document_name and session.get("DocumentName") != document_name:
                continue
            found.append(session)
            if limit is not None and len(found) >= limit:
                return found
        token = page.get("NextToken")
        if not token:
            return found


@SSMSessionErrorHandler.common_error_handler("terminate session")
@AWSRetry.jittered_backoff()
def terminate_session(client, session_id: str) -> None:
    client.terminate_session(SessionId=session_id)
