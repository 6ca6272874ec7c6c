"""playbooks/site.yml with bastionless.ssm.session as the nodes' connection: the scenario of test_site.py (check mode,
the real run, idempotence, no SSH, ad-hoc commands, transcripts), its tests run as they are, every node task over
persistent sessions instead of amazon.aws.aws_ssm (ansible_cli.run adds the connection, see CONNECTION_ENV)."""

from session_connection import session_connection  # noqa: F401 pylint: disable=unused-import
# In the scenario's order (pytest runs them in the order they are bound here).
from test_site import (  # noqa: F401 pylint: disable=unused-import
    lab,
    test_nodes_start_unreachable,
    test_check_mode_on_a_fresh_lab_predicts_and_changes_nothing,
    test_site_takes_offline_nodes_to_configured,
    test_second_run_changes_nothing_on_any_host,
    test_no_ssh_anywhere,
    test_ad_hoc_command_across_the_fleet,
    test_sessions_leave_transcripts_in_s3_and_cloudwatch,
)


def test_the_nodes_were_reached_over_persistent_sessions(lab):  # pylint: disable=redefined-outer-name
    # Two site.yml runs and the ad-hoc tests: with aws_ssm every node task is a session of its own; with the
    # persistent connection a node needs one session per master (a few), far fewer than its tasks.
    sessions = lab.client("ssm").describe_sessions(State="History")["Sessions"]
    sessions += lab.client("ssm").describe_sessions(State="Active")["Sessions"]
    per_node = {}
    for session in sessions:
        per_node[session["Target"]] = per_node.get(session["Target"], 0) + 1
    assert per_node and all(count <= 6 for count in per_node.values()), per_node
