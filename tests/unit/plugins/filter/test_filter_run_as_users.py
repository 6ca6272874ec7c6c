# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The run_as_users filters: input problems, the plan, a node's problems and share, and the check after apply. The
role runs them on the lab's nodes in tests/integration/test_role_run_as_users.py."""

import base64
import json

import pytest

from ansible_collections.bastionless.ssm.plugins.filter import run_as_users as ru


def state(content) -> str:
    return base64.b64encode(json.dumps(content).encode()).decode()


def passwd(**uids) -> dict:
    return {name: ["x", str(uid), str(uid), "", f"/home/{name}", "/bin/bash"] for name, uid in uids.items()}


# --- inputs -----------------------------------------------------------------------------------------------------


def test_good_inputs_have_no_problem():
    assert ru.problems({"alice": "alice", "alice-admin": "alice"}, extra=["deploy"],
                       options={"deploy": {"shell": "/bin/sh", "groups": ["wheel"], "home": "/srv/deploy"}},
                       sudo={"alice": True, "deploy": ["ALL=(root) NOPASSWD: /usr/bin/systemctl restart nginx"]}) == []


def test_map_principals_and_users():
    assert ru.problems({"arn:aws:iam::1:user/a": "ok", "bob": "Bob"}) == [
        "run_as_users_map: 'arn:aws:iam::1:user/a' is not an IAM user or role name (1-64 letters, digits and "
        "+=,.@_-); give the name, not the ARN.",
        "run_as_users_map: 'bob' maps to \"Bob\", which is not a Linux user name; use lower-case letters, digits, _ "
        "and -, starting with a letter or _, at most 32 characters.",
    ]


@pytest.mark.parametrize("variable, value, expected", [
    ("extra", ["9lives"], "run_as_users_extra: \"9lives\" is not a Linux user name"),
    ("shell", "bash", "run_as_users_shell: 'bash' is not an absolute path"),
    ("groups", ["Wheel"], "run_as_users_groups: \"Wheel\" is not a Linux group name"),
    ("comment", "a:b", "run_as_users_comment: has a colon or a line break"),
    ("uid_min", 0, "run_as_users_uid_min: 0 would let the role touch root"),
    ("visudo", "visudo", "run_as_users_visudo: 'visudo' is not an absolute path"),
])
def test_each_role_wide_input(variable, value, expected):
    [problem] = ru.problems({"alice": "alice"}, **{variable: value})
    assert problem.startswith(expected), problem


@pytest.mark.parametrize("options, expected", [
    ({"carol": {}}, "run_as_users_options: 'carol' is not one of the users"),
    ({"alice": "x"}, "run_as_users_options: 'alice' has \"x\"; give a mapping of shell, groups, comment, home."),
    ({"alice": {"uid": 5}}, "run_as_users_options: 'alice' has uid, which the role does not know"),
    ({"alice": {"shell": "sh"}}, "run_as_users_options: 'alice' has shell \"sh\", which is not an absolute path."),
    ({"alice": {"home": 1}}, "run_as_users_options: 'alice' has home 1, which is not an absolute path."),
    ({"alice": {"comment": "a\nb"}}, "run_as_users_options: 'alice' has a comment with a colon or a line break"),
    ({"alice": {"groups": "wheel"}}, "run_as_users_options: 'alice' has groups \"wheel\"; give a list"),
    ({"alice": {"groups": ["ok", 1]}}, "run_as_users_options: 'alice' has groups [\"ok\", 1]; give a list"),
])
def test_per_user_options(options, expected):
    [problem] = ru.problems({"alice": "alice"}, options=options)
    assert problem.startswith(expected), problem


@pytest.mark.parametrize("rules", [True, False, None, ["ALL=(ALL) ALL"]])
def test_sudo_rules_that_are_fine(rules):
    assert ru.problems({"alice": "alice"}, sudo={"alice": rules}) == []


@pytest.mark.parametrize("rules", ["ALL", [""], ["  "], ["a\nb"], [1], {"a": 1}])
def test_sudo_rules_that_are_not(rules):
    [problem] = ru.problems({"alice": "alice"}, sudo={"alice": rules})
    assert problem.startswith(f"run_as_users_sudo: 'alice' has {json.dumps(rules)}; give true")


def test_sudo_for_nobody_the_role_makes():
    [problem] = ru.problems({"alice": "alice"}, sudo={"bob": True})
    assert problem.startswith("run_as_users_sudo: 'bob' is not one of the users")


# --- the plan ---------------------------------------------------------------------------------------------------


def test_the_plan_sorts_users_gathers_their_principals_and_falls_back_to_the_role_wide_options():
    made = ru.plan({"alice": "alice", "alice-admin": "alice", "bob": "bob"}, extra=["deploy", "bob"],
                   options={"deploy": {"shell": "/bin/sh", "groups": ["b", "a", "b"], "home": "/srv/d", "comment": ""}},
                   shell="/bin/zsh", groups=["wheel"], comment="Run As")
    assert made["users"] == [
        {"name": "alice", "iam": ["alice", "alice-admin"], "shell": "/bin/zsh", "groups": ["wheel"],
         "comment": "Run As", "home": ""},
        {"name": "bob", "iam": ["bob"], "shell": "/bin/zsh", "groups": ["wheel"], "comment": "Run As", "home": ""},
        {"name": "deploy", "iam": [], "shell": "/bin/sh", "groups": ["a", "b"], "comment": "Run As", "home": "/srv/d"},
    ]


def test_a_principal_mapped_to_the_agents_own_account_makes_no_account():
    """The identity that runs Ansible mapped to ssm-user: the agent makes that account and its sudo rule."""
    made = ru.plan({"alice": "alice", "ci-deployer": "ssm-user"}, extra=["ssm-user", "session-user"])
    assert [user["name"] for user in made["users"]] == ["alice", "session-user"]
    assert ru.problems({"alice": "alice", "ci-deployer": "ssm-user"}, extra=["session-user"]) == []


def test_an_empty_group_list_of_a_user_wins_over_the_role_wide_one():
    [user] = ru.plan({"alice": "alice"}, options={"alice": {"groups": []}}, groups=["wheel"])["users"]
    assert user["groups"] == []


def test_sudo_rules_true_false_and_lists():
    made = ru.plan({"a": "a", "b": "b", "c": "c"}, sudo={"a": True, "b": False, "c": ["  ALL=(root) /bin/ls "]})
    assert made["sudo"] == {"a": ["a ALL=(ALL) NOPASSWD: ALL"], "c": ["c ALL=(root) /bin/ls"]}


# --- a node -----------------------------------------------------------------------------------------------------

PLAN = {"users": [{"name": "alice", "iam": ["alice"], "shell": "/bin/bash", "groups": ["ops", "wheel"], "home": ""},
                  {"name": "deploy", "iam": [], "shell": "/bin/sh", "groups": [], "home": "/srv/deploy"}],
        "sudo": {"alice": ["alice ALL=(ALL) NOPASSWD: ALL"]}}


def test_system_accounts_and_missing_groups_on_the_node():
    found = ru.node_problems(PLAN, passwd(deploy=998), {"wheel": []}, [], host="web-1")
    assert found == [
        "run_as_users_groups / run_as_users_options: 'alice' should join ops, which does not exist on web-1; create "
        "it first (ansible.builtin.group) or drop it from the list.",
        "run_as_users_extra: 'deploy' is a system account on web-1 (uid 998, below run_as_users_uid_min 1000); the "
        "role does not change system accounts: use an ordinary user instead.",
    ]


@pytest.mark.parametrize("check", [
    {"item": {"key": "alice"}, "msg": "Error executing command.", "rc": 2},
    {"item": {"key": "alice"}, "msg": "[Errno 2] No such file or directory", "rc": 2},
    {"item": {"key": "alice"}, "rc": None},
    {"item": {"key": "alice"}, "failed": True},
])
def test_a_visudo_that_cannot_run_is_named_once(check):
    found = ru.node_problems(PLAN, {}, {"ops": [], "wheel": []}, [check, check], visudo="/usr/sbin/visudo", host="n")
    assert found == ["run_as_users_visudo: /usr/sbin/visudo is not on n, and sudo rules need it; install sudo on the "
                     "node (it brings visudo) or set run_as_users_visudo to its path."]


def test_rules_visudo_rejects_with_what_it_said_on_one_line():
    checks = [{"item": {"key": "alice"}, "rc": 1, "stderr": ">>> stdin: syntax error near line 1 <<<\n",
               "stdout": "parse error\n"}, {"item": {"key": "bob"}, "rc": 0}, {"skipped": True}]
    [problem] = ru.node_problems(PLAN, {}, {"ops": [], "wheel": []}, checks)
    assert problem.startswith("run_as_users_sudo: visudo rejects the rules of 'alice' (>>> stdin: syntax error near "
                              "line 1 <<< parse error); fix them")


def test_the_node_share_takes_over_accounts_that_were_there_and_removes_only_what_the_role_made():
    accounts = passwd(alice=1001, carol=1002, dave=1003, daemon=2)
    file = state({"users": ["carol", "daemon", "ghost", 7, "carol"]})
    kept = ru.node_plan(PLAN, accounts, file)
    assert kept == {"previous": ["carol", "daemon", "ghost"], "removable": ["carol"], "state": ["carol", "deploy"]}
    removed = ru.node_plan(PLAN, accounts, file, remove_absent=True)
    assert removed == {"previous": ["carol", "daemon", "ghost"], "removable": ["carol"], "state": ["deploy"]}


@pytest.mark.parametrize("content", [None, "not base64!", state(["carol"]), state({"users": "carol"}),
                                     base64.b64encode(b"{not json").decode()])
def test_no_state_file_or_one_that_cannot_be_read_lists_nobody(content):
    assert ru.node_plan(PLAN, passwd(carol=1002), content)["previous"] == []


def test_after_apply_every_difference_is_named():
    accounts = passwd(alice=1001, deploy=1002, carol=1003)
    found = ru.verify_problems(PLAN, accounts, ["/etc/sudoers.d/bastionless-run-as-bob"],
                               node={"removable": ["carol"]}, remove_absent=True)
    assert found == [
        "the account deploy has shell /bin/bash and home /home/deploy;",
        "the role's sudo rule files are for bob, not for alice;",
        "the account carol is still there;",
    ]
    del accounts["alice"]
    assert "the account alice is missing;" in ru.verify_problems(PLAN, accounts, [])


def test_after_apply_all_is_well():
    accounts = passwd(alice=1001)
    accounts["deploy"] = ["x", "1002", "1002", "", "/srv/deploy", "/bin/sh"]
    assert ru.verify_problems(PLAN, accounts, ["/etc/sudoers.d/bastionless-run-as-alice"],
                              node={"removable": ["carol"]}) == []


def test_the_filters_ansible_sees():
    assert set(ru.FilterModule().filters()) == {"run_as_users_problems", "run_as_users_plan",
                                                "run_as_users_node_problems", "run_as_users_node_plan",
                                                "run_as_users_verify_problems"}
