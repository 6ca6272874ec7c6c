# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Reading the result of bastionless.ssm.ssm_preflight in a play. The filter's documentation is in the .yml file of
its name beside this one."""

from __future__ import annotations


def offline_lines(nodes: list) -> list:
    """One line per cause of each node that is not Online: its errors (else all its findings) with their fix, or that
    no cause was found."""
    lines = []
    for node in nodes or ():
        if node.get("online"):
            continue
        findings = node.get("findings") or []
        causes = [f for f in findings if f.get("severity") == "error"] or findings
        if not causes:
            lines.append(f"{node['instance_id']}: not Online, no cause found")
        for finding in causes:
            lines.append(f"{node['instance_id']} ({node.get('ping_status') or 'never registered'}): {finding['code']} - "
                         f"{finding['message']} Fix: {finding['fix']}")
    return lines


class FilterModule:
    """The ssm_preflight filters."""

    def filters(self):
        return {"preflight_offline_lines": offline_lines}
