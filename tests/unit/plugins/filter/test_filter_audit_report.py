"""The audit report filters (plugins/filter/audit_report.py): rows, summaries, CSV, the HTML page and its timeline,
on results shaped as bastionless.ssm.ssm_audit_info returns them."""

import csv
import html.parser
import io

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.filter import audit_report as report

ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:sts::123456789012:assumed-role/Oncall/bob"


def who(arn, ip="198.51.100.7"):
    return {"arn": arn, "type": "IAMUser", "name": arn.rsplit("/", 1)[-1], "source_ip": ip}


RESULT = {
    "start_time": "2025-01-31T00:00:00Z",
    "end_time": "2025-02-01T00:00:00Z",
    "history_covers_range": True,
    "events_read": 12,
    "sessions": [
        {"session_id": "bob-2", "principal": who(BOB), "node": {"id": "i-2", "name": "db-1"},
         "document": "AWS-StartPortForwardingSessionToRemoteHost",
         "forwarding": {"host": "db.internal", "port": "5432", "local_port": None},
         "start_time": "2025-01-31T12:00:00Z", "end_time": None, "ended": "open", "reason": "<script>x</script>"},
        {"session_id": "alice-1", "principal": who(ALICE), "node": {"id": "i-1", "name": "web-1"},
         "document": "SSM-SessionManagerRunShell", "forwarding": None, "run_as": "alice_os",
         "start_time": "2025-01-31T08:00:00Z", "end_time": "2025-01-31T09:00:00Z", "ended": "terminated",
         "terminated_by": who(ALICE), "reason": "=HYPERLINK(\"http://x\")",
         "transcript": {"s3_bucket": "b", "s3_key": "s/alice-1.log", "log_group": "/g", "log_stream": "alice-1"}},
    ],
    "commands": [
        {"command_id": "c-1", "principal": who(ALICE), "document": "AWS-RunShellScript", "requested":
         "2025-01-31T08:30:00Z", "nodes": [{"id": "i-2", "name": "db-1"}], "targets": [], "commands": ["uptime", "id"],
         "status": "Success", "comment": ""},
    ],
    "denied": [
        {"event": "StartSession", "time": "2025-01-31T07:00:00Z", "principal": who("arn:aws:iam::1:user/mallory"),
         "node_ids": ["i-1"], "document": None, "error_code": "AccessDeniedException", "error_message": "no"},
    ],
}


class Cells(html.parser.HTMLParser):
    """The text of each table's cells, by table id."""

    def __init__(self):
        super().__init__()
        self.tables, self.table, self.row, self.cell = {}, None, None, None
        self.rects = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.table is not None:
            self.row = []
            self.table.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""
        elif tag == "rect" and "data-session" in attrs:
            self.rects.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def parse(page):
    cells = Cells()
    cells.feed(page)
    return cells


def test_session_rows_flatten_each_session():
    rows = report.session_rows(RESULT)
    assert [r["session_id"] for r in rows] == ["bob-2", "alice-1"]
    assert (rows[0]["forwarded_host"], rows[0]["forwarded_port"], rows[0]["ended"]) == ("db.internal", "5432", "open")
    assert (rows[1]["transcript_s3"], rows[1]["transcript_log"], rows[1]["terminated_by"]) == (
        "s3://b/s/alice-1.log", "/g:alice-1", ALICE)


def test_summaries_per_person_and_per_node():
    people, nodes = report.summaries(RESULT)
    by_arn = {p["principal"]: p for p in people}
    assert {k: by_arn[ALICE][k] for k in ("sessions", "commands", "forwards", "nodes", "denied", "last_seen")} == {
        "sessions": 1, "commands": 1, "forwards": 0, "nodes": 2, "denied": 0, "last_seen": "2025-01-31T08:30:00Z"}
    assert (by_arn[BOB]["forwards"], by_arn["arn:aws:iam::1:user/mallory"]["denied"]) == (1, 1)
    by_node = {n["node_id"]: n for n in nodes}
    assert (by_node["i-2"]["sessions"], by_node["i-2"]["commands"], by_node["i-2"]["people"]) == (1, 1, 2)
    assert by_node["i-1"]["node_name"] == "web-1"


def test_csv_has_a_header_and_defuses_formulas():
    rows = list(csv.reader(io.StringIO(report.audit_report_csv(RESULT))))
    assert tuple(rows[0]) == report.SESSION_COLUMNS
    reason = rows[0].index("reason")
    assert rows[2][reason] == "'=HYPERLINK(\"http://x\")"
    commands = list(csv.reader(io.StringIO(report.audit_report_csv(RESULT, "commands"))))
    assert commands[1][commands[0].index("commands")] == "uptime\nid"
    denied = list(csv.reader(io.StringIO(report.audit_report_csv(RESULT, kind="denied"))))
    assert denied[1][denied[0].index("error_code")] == "AccessDeniedException"


def test_the_page_shows_every_table_and_escapes_what_callers_chose():
    page = report.audit_report_html(RESULT, title="Audit <January>")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<title>Audit &lt;January&gt;</title>" in page
    assert " src=" not in page and " href=" not in page and "<link" not in page  # self-contained
    cells = parse(page)
    assert [row[-1] for row in cells.tables["sessions"][1:]] == ["bob-2", "alice-1"]
    assert cells.tables["commands"][1][cells.tables["commands"][0].index("Commands")] == "uptime\nid"
    assert len(cells.tables["people"]) == 4 and len(cells.tables["nodes"]) == 3
    assert cells.tables["denied"][1][0] == "2025-01-31T07:00:00Z"


def test_the_timeline_has_a_bar_per_session_over_the_range():
    cells = parse(report.audit_report_html(RESULT))
    bars = {r["data-session"]: r for r in cells.rects}
    assert set(bars) == {"alice-1", "bob-2"}
    assert bars["alice-1"]["fill"] != bars["bob-2"]["fill"]
    # alice's hour is 1/24 of the range; bob's open session runs to the end of the range (12 hours).
    assert float(bars["bob-2"]["width"]) == pytest.approx(12 * float(bars["alice-1"]["width"]), rel=0.01)
    assert float(bars["bob-2"]["x"]) > float(bars["alice-1"]["x"])


def test_an_empty_trail_and_a_range_older_than_the_history():
    page = report.audit_report_html({"sessions": [], "commands": [], "denied": [], "history_covers_range": False,
                                     "start_time": "2025-01-01T00:00:00Z", "end_time": "2025-01-02T00:00:00Z"})
    assert "90-day event history" in page
    assert parse(page).tables["sessions"][1] == ["none"]


@pytest.mark.parametrize("value", [None, [], "text", {"changed": False}])
def test_bad_input_names_the_module_to_register(value):
    with pytest.raises(AnsibleFilterError) as caught:
        report.audit_report_html(value)
    assert "takes the result of bastionless.ssm.ssm_audit_info" in str(caught.value)


def test_bad_kind():
    with pytest.raises(AnsibleFilterError) as caught:
        report.audit_report_csv(RESULT, "nodes")
    assert str(caught.value) == "audit_report_csv: kind must be one of sessions, commands, denied, not 'nodes'."
