# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The audit report of playbooks/audit-report.yml, from what bastionless.ssm.ssm_audit_info returns: a self-contained
HTML page (summaries per person and per node, a timeline, sortable tables) and CSV. The filters' documentation is in
audit_report_html.yml and audit_report_csv.yml beside this one.

Every value comes from CloudTrail and may have been chosen by a caller (a session's reason, a user agent), so the HTML
escapes each one and its script reads only the page's own cells; CSV cells that a spreadsheet would take for a formula
are quoted with a leading apostrophe."""

from __future__ import annotations

import csv
import datetime
import html
import io

from ansible.errors import AnsibleFilterError

SESSION_COLUMNS = ("start_time", "end_time", "principal", "principal_type", "source_ip", "node_id", "node_name",
                   "document", "forwarded_host", "forwarded_port", "local_port", "run_as", "ended", "terminated_by",
                   "reason", "transcript_s3", "transcript_log", "session_id")
COMMAND_COLUMNS = ("requested", "principal", "source_ip", "document", "nodes", "targets", "commands", "status",
                   "comment", "command_id")
DENIED_COLUMNS = ("time", "event", "principal", "source_ip", "nodes", "document", "error_code", "error_message")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _result(value, name: str) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("sessions"), list):
        raise AnsibleFilterError(f"{name} takes the result of bastionless.ssm.ssm_audit_info (a dict with sessions, "
                                 f"commands and denied), not {type(value).__name__}; register the module's result and "
                                 "pass it.")
    return value


def _node(node: dict | None) -> str:
    node = node or {}
    return f"{node.get('name')} ({node.get('id')})" if node.get("name") else str(node.get("id") or "")


def session_rows(result: dict) -> list[dict]:
    """One flat row per session, in SESSION_COLUMNS."""
    rows = []
    for session in result.get("sessions") or []:
        who = session.get("principal") or {}
        forward = session.get("forwarding") or {}
        transcript = session.get("transcript") or {}
        rows.append({
            "start_time": session.get("start_time") or "",
            "end_time": session.get("end_time") or "",
            "principal": who.get("arn") or "",
            "principal_type": who.get("type") or "",
            "source_ip": who.get("source_ip") or "",
            "node_id": (session.get("node") or {}).get("id") or "",
            "node_name": (session.get("node") or {}).get("name") or "",
            "document": session.get("document") or "",
            "forwarded_host": forward.get("host") or "",
            "forwarded_port": forward.get("port") or "",
            "local_port": forward.get("local_port") or "",
            "run_as": session.get("run_as") or "",
            "ended": session.get("ended") or "",
            "terminated_by": (session.get("terminated_by") or {}).get("arn") or "",
            "reason": session.get("reason") or "",
            "transcript_s3": (f"s3://{transcript['s3_bucket']}/{transcript.get('s3_key') or ''}"
                              if transcript.get("s3_bucket") else ""),
            "transcript_log": (f"{transcript['log_group']}:{transcript.get('log_stream') or ''}"
                               if transcript.get("log_group") else ""),
            "session_id": session.get("session_id") or "",
        })
    return rows


def command_rows(result: dict) -> list[dict]:
    rows = []
    for command in result.get("commands") or []:
        who = command.get("principal") or {}
        rows.append({
            "requested": command.get("requested") or "",
            "principal": who.get("arn") or "",
            "source_ip": who.get("source_ip") or "",
            "document": command.get("document") or "",
            "nodes": " ".join(_node(n) for n in command.get("nodes") or []),
            "targets": " ".join(f"{t.get('key')}={','.join(t.get('values') or [])}" for t in command.get("targets") or []),
            "commands": "\n".join(command.get("commands") or []) if command.get("commands") is not None else "",
            "status": command.get("status") or "",
            "comment": command.get("comment") or "",
            "command_id": command.get("command_id") or "",
        })
    return rows


def denied_rows(result: dict) -> list[dict]:
    rows = []
    for denied in result.get("denied") or []:
        who = denied.get("principal") or {}
        rows.append({
            "time": denied.get("time") or "", "event": denied.get("event") or "", "principal": who.get("arn") or "",
            "source_ip": who.get("source_ip") or "", "nodes": " ".join(denied.get("node_ids") or []),
            "document": denied.get("document") or "", "error_code": denied.get("error_code") or "",
            "error_message": denied.get("error_message") or "",
        })
    return rows


def summaries(result: dict) -> tuple[list[dict], list[dict]]:
    """(per person, per node): what each principal did and what reached each node."""
    people: dict[str, dict] = {}
    nodes: dict[str, dict] = {}

    def person(who: dict) -> dict:
        arn = who.get("arn") or "?"
        return people.setdefault(arn, {"principal": arn, "sessions": 0, "forwards": 0, "commands": 0, "denied": 0,
                                       "nodes": set(), "last_seen": ""})

    def node(node_id: str, name: str | None) -> dict:
        return nodes.setdefault(node_id, {"node_id": node_id, "node_name": name or "", "sessions": 0, "commands": 0,
                                          "people": set(), "last_session": ""})

    for session in result.get("sessions") or []:
        entry, where = person(session.get("principal") or {}), session.get("node") or {}
        entry["sessions"] += 1
        entry["forwards"] += 1 if session.get("forwarding") else 0
        entry["nodes"].add(where.get("id") or "")
        entry["last_seen"] = max(entry["last_seen"], session.get("start_time") or "")
        target = node(where.get("id") or "", where.get("name"))
        target["sessions"] += 1
        target["people"].add(entry["principal"])
        target["last_session"] = max(target["last_session"], session.get("start_time") or "")
    for command in result.get("commands") or []:
        entry = person(command.get("principal") or {})
        entry["commands"] += 1
        entry["last_seen"] = max(entry["last_seen"], command.get("requested") or "")
        for item in command.get("nodes") or []:
            entry["nodes"].add(item.get("id") or "")
            target = node(item.get("id") or "", item.get("name"))
            target["commands"] += 1
            target["people"].add(entry["principal"])
    for denied in result.get("denied") or []:
        person(denied.get("principal") or {})["denied"] += 1
    per_person = [{**p, "nodes": len(p["nodes"] - {""})} for p in people.values()]
    per_node = [{**n, "people": len(n["people"])} for n in nodes.values()]
    per_person.sort(key=lambda p: (-p["sessions"] - p["commands"], p["principal"]))
    per_node.sort(key=lambda n: (-n["sessions"] - n["commands"], n["node_id"]))
    return per_person, per_node


def audit_report_csv(result, kind: str = "sessions") -> str:
    """CSV of the sessions, the commands or the refused calls, with a header row."""
    result = _result(result, "audit_report_csv")
    tables = {"sessions": (SESSION_COLUMNS, session_rows), "commands": (COMMAND_COLUMNS, command_rows),
              "denied": (DENIED_COLUMNS, denied_rows)}
    if kind not in tables:
        raise AnsibleFilterError(f"audit_report_csv: kind must be one of {', '.join(tables)}, not {kind!r}.")
    columns, rows_of = tables[kind]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows_of(result):
        writer.writerow(["'" + str(row[c]) if str(row[c]).startswith(FORMULA_START) else row[c] for c in columns])
    return out.getvalue()


# --- HTML --------------------------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(table_id: str, caption: str, columns: list[tuple[str, str]], rows: list[dict]) -> str:
    head = "".join(f'<th scope="col" data-key="{_e(key)}">{_e(label)}</th>' for key, label in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(row.get(key))}</td>" for key, _label in columns) + "</tr>"
                   for row in rows)
    if not rows:
        body = f'<tr class="empty"><td colspan="{len(columns)}">none</td></tr>'
    return (f'<table id="{_e(table_id)}" class="sortable"><caption>{_e(caption)} ({len(rows)})</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def timeline_svg(result: dict) -> str:
    """An SVG picture of the sessions: one row per node, a bar per session from its start to its end (to the end of
    the range while it is open), one colour per person, the details in each bar's title."""
    sessions = result.get("sessions") or []
    start = _seconds(result.get("start_time"))
    end = _seconds(result.get("end_time"))
    starts = [_seconds(s.get("start_time")) for s in sessions]
    if start is None:
        start = min([s for s in starts if s is not None], default=0.0)
    if end is None or end <= start:
        end = max([s for s in starts if s is not None], default=start) + 60
    rows = sorted({_node(s.get("node")) for s in sessions})
    people = sorted({(s.get("principal") or {}).get("arn") or "?" for s in sessions})
    colour = {arn: COLOURS[i % len(COLOURS)] for i, arn in enumerate(people)}
    label_width, width, row_height = 260, 1000, 22
    height = 30 + row_height * max(len(rows), 1) + 22 * len(people)
    scale = (width - label_width - 10) / (end - start)
    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Sessions over time, one row per node">',
             f'<text x="{label_width}" y="14" class="axis">{_e(iso_text(start))}</text>',
             f'<text x="{width - 10}" y="14" class="axis" text-anchor="end">{_e(iso_text(end))}</text>']
    for index, row in enumerate(rows):
        y = 24 + index * row_height
        parts.append(f'<text x="4" y="{y + 14}" class="node">{_e(row)}</text>')
        parts.append(f'<line x1="{label_width}" y1="{y + row_height - 2}" x2="{width - 10}" y2="{y + row_height - 2}" '
                     'class="grid"/>')
    for session in sessions:
        began = _seconds(session.get("start_time"))
        if began is None:
            continue
        finished = _seconds(session.get("end_time")) or (end if session.get("ended") == "open" else began + 60)
        y = 24 + rows.index(_node(session.get("node"))) * row_height
        x = label_width + max(began - start, 0) * scale
        length = max((min(finished, end) - max(began, start)) * scale, 3)
        arn = (session.get("principal") or {}).get("arn") or "?"
        title = (f"{arn} on {_node(session.get('node'))}: {session.get('document')} "
                 f"{session.get('start_time')} to {session.get('end_time') or session.get('ended')}")
        if session.get("forwarding"):
            forward = session["forwarding"]
            title += f", forwarding to {forward.get('host')}:{forward.get('port')}"
        parts.append(f'<rect class="session" data-session="{_e(session.get("session_id"))}" x="{x:.1f}" '
                     f'y="{y + 3}" width="{length:.1f}" height="{row_height - 8}" fill="{colour[arn]}">'
                     f"<title>{_e(title)}</title></rect>")
    legend_y = 30 + row_height * max(len(rows), 1)
    for index, arn in enumerate(people):
        y = legend_y + index * 22
        parts.append(f'<rect x="4" y="{y}" width="14" height="14" fill="{colour[arn]}"/>'
                     f'<text x="24" y="{y + 12}" class="legend">{_e(arn)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def iso_text(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0 2em; font-size: 0.9em; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; text-align: left; }
td { white-space: pre-wrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
svg text { font-size: 12px; } svg .grid { stroke: #eee; } svg .axis { fill: #666; }
.note { color: #a40; }
"""

# Sorts a table by the clicked column (numbers as numbers, the rest as text), toggling the direction; it reads and
# moves the page's own rows, nothing else.
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], index = th.cellIndex;
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return !r.classList.contains("empty"); });
    rows.sort(function (a, b) {
      var x = a.cells[index].textContent, y = b.cells[index].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (!isNaN(nx) && !isNaN(ny) && String(nx) === x && String(ny) === y) ? nx - ny : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def audit_report_html(result, title: str = "Session Manager audit") -> str:
    """The whole report as one HTML page with no outside resources."""
    result = _result(result, "audit_report_html")
    per_person, per_node = summaries(result)
    notes = []
    if result.get("history_covers_range") is False:
        notes.append("The range begins before CloudTrail's 90-day event history: earlier events are missing.")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p id="range">From {_e(result.get("start_time"))} to {_e(result.get("end_time"))}: '
        f'{len(result.get("sessions") or [])} sessions, {len(result.get("commands") or [])} commands, '
        f'{len(result.get("denied") or [])} refused calls, {_e(result.get("events_read", 0))} CloudTrail events '
        "read.</p>",
        *(f'<p class="note">{_e(n)}</p>' for n in notes),
        "<h2>Timeline</h2>", timeline_svg(result),
        "<h2>Summaries</h2>",
        _table("people", "Per person", [("principal", "Principal"), ("sessions", "Sessions"),
                                        ("forwards", "Port forwards"), ("commands", "Commands"),
                                        ("nodes", "Nodes"), ("denied", "Refused"), ("last_seen", "Last seen")],
               per_person),
        _table("nodes", "Per node", [("node_id", "Node"), ("node_name", "Name"), ("sessions", "Sessions"),
                                     ("commands", "Commands"), ("people", "People"),
                                     ("last_session", "Last session")], per_node),
        "<h2>Details</h2>",
        _table("sessions", "Sessions", [(c, c.replace("_", " ").capitalize()) for c in SESSION_COLUMNS],
               session_rows(result)),
        _table("commands", "Run Command", [(c, c.replace("_", " ").capitalize()) for c in COMMAND_COLUMNS],
               command_rows(result)),
        _table("denied", "Refused calls", [(c, c.replace("_", " ").capitalize()) for c in DENIED_COLUMNS],
               denied_rows(result)),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            + "".join(sections) + f"<script>{SCRIPT}</script></body></html>\n")


class FilterModule:
    """The audit report filters."""

    def filters(self):
        return {"audit_report_html": audit_report_html, "audit_report_csv": audit_report_csv}
