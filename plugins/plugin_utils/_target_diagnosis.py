# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Why a session to a node could not start, in the words a user can act on: the region the connection looked in (and
whether that is a region at all), whether the instance exists there, whether Systems Manager knows it and whether its
agent is connected, and where to look next (ssm_preflight).

``look_up`` makes the API calls (each one allowed to fail: a diagnosis never hides the error it explains);
``explain`` turns what they found into the sentence, and is what the unit tests cover.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Optional

# The forms of a managed node's id: an EC2 instance (i- and 8 or 17 hexadecimal digits) or a hybrid node (mi- and 17).
NODE_ID = re.compile(r"^(i-([0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17})$")
PREFLIGHT = ("Run playbooks/preflight.yml (bastionless.ssm.ssm_preflight) on the node for the cause and the fix.")


def known_regions() -> frozenset:
    """Every region botocore knows, in every partition (empty when botocore is not there: nothing is refused)."""
    try:
        import botocore.session  # pylint: disable=import-outside-toplevel
    except ImportError:
        return frozenset()
    session = botocore.session.get_session()
    regions = set()
    for partition in session.get_available_partitions():
        for service in ("ssm", "ec2"):
            regions.update(session.get_available_regions(service, partition_name=partition))
    return frozenset(regions)


def _edits(a: str, b: str) -> int:
    """Edits from a to b: insertions, deletions, substitutions and swaps of neighbours (us-esat-1 -> us-east-1: 1)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def id_problem(instance_id: str) -> Optional[str]:
    """A sentence when ``instance_id`` has no form of a managed node's id (a typo), else None."""
    if NODE_ID.match(instance_id or ""):
        return None
    return (f"'{instance_id}' is not the id of a managed node (i- and 8 or 17 hexadecimal digits for an EC2 instance, "
            "mi- and 17 for a hybrid node): check ansible_aws_ssm_instance_id (the managed_nodes inventory sets it for "
            "each host) or the host name the play uses")


def region_problem(region: Optional[str], regions: Iterable[str],
                   fix: str = "fix ansible_aws_ssm_region or AWS_REGION", known_by: str = "") -> Optional[str]:
    """A sentence when ``region`` is not a region botocore knows (with the nearest names), else None. ``fix``: what
    to change, as the caller names it. ``known_by`` (``botocore 1.35.0``, say): the sentence says the region is not
    one that knows, rather than no AWS region (for a caller whose fix covers regions newer than botocore)."""
    regions = sorted(regions)
    if not regions:
        return None
    if not region:
        return ("no region is set: set ansible_aws_ssm_region (the managed_nodes inventory sets it for each host), "
                "or AWS_REGION")
    if region in regions:
        return None
    distance, near = min((_edits(region, known), known) for known in regions)
    hint = f" (did you mean {near}?)" if distance <= 2 else ""
    what = f"a region {known_by} knows" if known_by else "an AWS region"
    return f"'{region}' is not {what}{hint}: {fix}"


def look_up(instance_id: str, ssm, ec2) -> Dict[str, Any]:
    """What Systems Manager and EC2 say about the instance in the clients' region: ``registered`` (None: unknown),
    ``ping_status``, ``last_ping``, ``ec2_state`` (None: no such instance, "": not asked or not EC2). Each call that
    fails leaves its facts unknown."""
    facts: Dict[str, Any] = {"registered": None, "ping_status": "", "last_ping": "", "ec2_state": ""}
    try:
        rows = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])["InstanceInformationList"]
        facts["registered"] = bool(rows)
        if rows:
            facts["ping_status"] = rows[0].get("PingStatus", "")
            facts["last_ping"] = str(rows[0].get("LastPingDateTime", ""))
    except Exception:  # pylint: disable=broad-exception-caught
        pass
    if ec2 is not None and instance_id.startswith("i-"):
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            instances = [i for r in reservations for i in r.get("Instances", [])]
            facts["ec2_state"] = instances[0]["State"]["Name"] if instances else None
        except Exception as e:  # pylint: disable=broad-exception-caught
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                facts["ec2_state"] = None
    return facts


def explain(instance_id: str, region: str, facts: Dict[str, Any]) -> str:
    """One or two sentences: what is wrong with the target in that region, and what to do."""
    registered, state = facts.get("registered"), facts.get("ec2_state")
    if state is None and instance_id.startswith("i-"):
        return (f"There is no EC2 instance {instance_id} in {region}: check ansible_aws_ssm_instance_id and "
                "ansible_aws_ssm_region (the managed_nodes inventory sets both for each host).")
    if state and state != "running":
        return f"Instance {instance_id} is {state} in {region}: start it, then wait for its agent to be Online."
    if registered is False:
        where = f"EC2 instance {instance_id} is running in {region}" if state else f"{instance_id} in {region}"
        return (f"{where} but is not registered with Systems Manager there: its agent has never connected "
                f"(instance profile, network path or agent). {PREFLIGHT}")
    ping = facts.get("ping_status")
    if ping and ping != "Online":
        since = f" (last ping {facts['last_ping']})" if facts.get("last_ping") else ""
        return f"{instance_id} is registered in {region} but its agent is offline: PingStatus {ping}{since}. {PREFLIGHT}"
    if ping == "Online":
        return (f"{instance_id} is Online in {region}; the session itself was refused (the message above), "
                f"a Session document or the caller's permissions, for instance. {PREFLIGHT}")
    return f"{PREFLIGHT}"


# What to change when StartSession refused the session itself (the node is fine), by the error code.
REFUSAL_FIXES = {
    "InvalidDocument": ("check ansible_aws_ssm_document: it must name a Session document of this account and region "
                        "(unset, the account's SSM-SessionManagerRunShell)"),
    "AccessDeniedException": ("the caller may not start this session: grant it ssm:StartSession on the instance and "
                              "the document (the bastionless.ssm.operator_access role writes such a policy), or use "
                              "credentials that have it (ansible_aws_ssm_profile, AWS_PROFILE)"),
}
# The error codes of AWS for credentials whose session token has expired.
EXPIRED_CODES = ("ExpiredTokenException", "ExpiredToken", "RequestExpired")


def expired_fix(credentials: str = "these credentials") -> str:
    """What to do when AWS refused ``credentials`` (as the caller names them) because their session token expired."""
    return (f"the session token of {credentials} has expired: get new temporary credentials (aws sso login, assume "
            "the role again, or a new AWS_SESSION_TOKEN) and run again")


EXPIRED = expired_fix()
REFUSAL_FIXES.update({code: EXPIRED for code in EXPIRED_CODES})


def refusal_fix(code: str) -> Optional[str]:
    """What to change for a StartSession refused with ``code`` whatever the node's state, or None."""
    return REFUSAL_FIXES.get(code)


def diagnose(instance_id: str, region: str, regions: Iterable[str], clients) -> str:
    """The whole explanation for a failed StartSession: the region first, then the instance. ``clients(service)``
    returns a boto3 client in ``region`` (not called when the region is no region)."""
    problem = region_problem(region, regions) or id_problem(instance_id)
    if problem:
        return problem[0].upper() + problem[1:] + "."
    try:
        ssm = clients("ssm")
        ec2 = clients("ec2") if instance_id.startswith("i-") else None
    except Exception:  # pylint: disable=broad-exception-caught
        return PREFLIGHT
    return explain(instance_id, region, look_up(instance_id, ssm, ec2))
