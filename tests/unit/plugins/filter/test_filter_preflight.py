# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""preflight_offline_lines: what playbooks/configure.yml says about each node still offline."""

from ansible_collections.bastionless.ssm.plugins.filter import preflight


def finding(code, severity="error"):
    return {"code": code, "severity": severity, "message": f"{code} happened.", "fix": f"Undo {code}."}


def test_errors_first_else_every_finding_else_no_cause():
    nodes = [
        {"instance_id": "i-1", "online": False, "ping_status": "ConnectionLost",
         "findings": [finding("NAT_ROUTE_MISSING", "warning"), finding("AGENT_CONNECTION_LOST")]},
        {"instance_id": "i-2", "online": False, "ping_status": None, "findings": [finding("NO_S3_PATH", "warning")]},
        {"instance_id": "i-3", "online": False, "ping_status": "Inactive", "findings": []},
        {"instance_id": "i-4", "online": True, "ping_status": "Online", "findings": [finding("X")]},
    ]
    assert preflight.offline_lines(nodes) == [
        "i-1 (ConnectionLost): AGENT_CONNECTION_LOST - AGENT_CONNECTION_LOST happened. Fix: Undo AGENT_CONNECTION_LOST.",
        "i-2 (never registered): NO_S3_PATH - NO_S3_PATH happened. Fix: Undo NO_S3_PATH.",
        "i-3: not Online, no cause found",
    ]


def test_all_online_is_nothing_to_say():
    assert preflight.offline_lines([]) == [] and preflight.offline_lines(None) == []
