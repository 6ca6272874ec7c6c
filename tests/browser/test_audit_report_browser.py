"""The audit report page (plugins/filter/audit_report.py, what playbooks/audit-report.yml writes) opened in a real
headless browser, Debian's chromium-headless-shell: the tables and the timeline are drawn, a click on a heading sorts
its table and a second click reverses it, values a caller chose stay text, and the page's script raises nothing.

Not part of make test (the browser costs a few seconds and a system package): ``make audit-report-browser``. A probe
script appended to the page records what the browser shows into ``<pre id="probe">``; ``--dump-dom`` prints the
document after the page has loaded and the probe has run."""

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BROWSER = os.environ.get("AUDIT_REPORT_BROWSER") or shutil.which("chromium-headless-shell") or shutil.which("chromium")
ALICE, BOB = "arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/bob"
TRAP = '<img src=x onerror="document.title=1">'

pytestmark = pytest.mark.skipif(not BROWSER, reason="no headless browser: make audit-report-browser installs one")


def _filters():
    spec = importlib.util.spec_from_file_location("audit_report", os.path.join(ROOT, "plugins", "filter",
                                                                               "audit_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _who(arn, ip):
    return {"arn": arn, "type": "IAMUser", "name": arn.rsplit("/", 1)[-1], "source_ip": ip}


RESULT = {
    "start_time": "2025-01-31T00:00:00Z", "end_time": "2025-02-01T00:00:00Z", "history_covers_range": True,
    "events_read": 9,
    "sessions": [
        {"session_id": "bob-3", "principal": _who(BOB, "198.51.100.9"), "node": {"id": "i-2", "name": "db-1"},
         "document": "AWS-StartPortForwardingSessionToRemoteHost", "start_time": "2025-01-31T15:00:00Z",
         "forwarding": {"host": "db.internal", "port": "5432", "local_port": "15432"}, "end_time": None,
         "ended": "open", "reason": TRAP},
        {"session_id": "alice-2", "principal": _who(ALICE, "198.51.100.7"), "node": {"id": "i-1", "name": "web-1"},
         "document": "SSM-SessionManagerRunShell", "start_time": "2025-01-31T10:00:00Z",
         "end_time": "2025-01-31T11:00:00Z", "ended": "terminated", "terminated_by": _who(ALICE, "198.51.100.7")},
        {"session_id": "alice-1", "principal": _who(ALICE, "198.51.100.7"), "node": {"id": "i-2", "name": "db-1"},
         "document": "SSM-SessionManagerRunShell", "start_time": "2025-01-31T08:00:00Z",
         "end_time": "2025-01-31T08:20:00Z", "ended": "timed_out"},
    ],
    "commands": [{"command_id": "c-1", "principal": _who(ALICE, "198.51.100.7"), "document": "AWS-RunShellScript",
                  "requested": "2025-01-31T09:00:00Z", "nodes": [{"id": "i-1", "name": "web-1"}], "targets": [],
                  "commands": ["uptime"], "status": "Success", "comment": ""}],
    "denied": [],
}

# Runs after the page's own script: errors are caught from the start by ERRORS, at the top of <head>.
ERRORS = "<script>window.__errors = []; window.addEventListener('error', function (e) { __errors.push(e.message); });</script>"
PROBE = """<script>
(function () {
  function column(table, index) {
    return Array.prototype.map.call(document.querySelectorAll("#" + table + " tbody tr"),
      function (r) { return r.cells[index].textContent; });
  }
  function header(table, label) {
    return Array.prototype.filter.call(document.querySelectorAll("#" + table + " th"),
      function (th) { return th.textContent === label; })[0];
  }
  var ids = header("sessions", "Session id").cellIndex, out = {};
  out.initial = column("sessions", ids);
  var start = header("sessions", "Start time");
  start.click(); out.ascending = column("sessions", ids); out.sort = start.getAttribute("aria-sort");
  start.click(); out.descending = column("sessions", ids);
  var count = header("people", "Sessions"); count.click();
  out.people = column("people", 0); out.counts = column("people", count.cellIndex);
  out.bars = Array.prototype.map.call(document.querySelectorAll("#timeline rect.session"), function (r) {
    var box = r.getBBox();
    return {session: r.getAttribute("data-session"), width: box.width, title: r.querySelector("title").textContent};
  });
  out.reason = column("sessions", header("sessions", "Reason").cellIndex);
  out.images = document.images.length;
  out.title = document.title;
  out.range = document.getElementById("range").textContent;
  out.errors = window.__errors;
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    page = _filters().audit_report_html(RESULT, title="Browser audit")
    page = page.replace("<head>", "<head>" + ERRORS, 1).replace("</body>", PROBE + "</body>", 1)
    path = tmp_path_factory.mktemp("report") / "audit.html"
    path.write_text(page, encoding="utf-8")
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_the_page_runs_without_errors(shown):
    assert shown["errors"] == []
    assert shown["title"] == "Browser audit"
    assert shown["range"].startswith("From 2025-01-31T00:00:00Z to 2025-02-01T00:00:00Z: 3 sessions, 1 commands")


def test_a_click_sorts_a_table_and_a_second_click_reverses_it(shown):
    assert shown["initial"] == ["bob-3", "alice-2", "alice-1"]
    assert (shown["ascending"], shown["sort"]) == (["alice-1", "alice-2", "bob-3"], "ascending")
    assert shown["descending"] == ["bob-3", "alice-2", "alice-1"]
    assert (shown["people"], shown["counts"]) == ([BOB, ALICE], ["1", "2"])  # numbers sort as numbers


def test_the_timeline_draws_a_bar_per_session(shown):
    bars = {drawn["session"]: drawn for drawn in shown["bars"]}
    assert set(bars) == {"bob-3", "alice-2", "alice-1"}
    # alice-2 lasted an hour, alice-1 twenty minutes; bob-3 is open, drawn to the end of the range (9 hours).
    assert bars["alice-2"]["width"] == pytest.approx(3 * bars["alice-1"]["width"], rel=0.02)
    assert bars["bob-3"]["width"] == pytest.approx(9 * bars["alice-2"]["width"], rel=0.02)
    assert "forwarding to db.internal:5432" in bars["bob-3"]["title"]


def test_a_value_a_caller_chose_stays_text(shown):
    assert shown["reason"][0] == TRAP and shown["images"] == 0
