"""Pure helpers of bastionless.ssm.instance_profile_association: current state, the plan, its summary."""

import pytest

from ansible_collections.bastionless.ssm.plugins.modules import instance_profile_association as ipa

ARN_A = "arn:aws:iam::123456789012:instance-profile/a"
ARN_B = "arn:aws:iam::123456789012:instance-profile/team/b"


@pytest.mark.parametrize(
    "before, state, wanted, replace, name, action, after",
    [
        # present
        (None, "present", ARN_A, False, None, "associated", ARN_A),
        (None, "present", ARN_A, True, None, "associated", ARN_A),
        (ARN_A, "present", ARN_A, False, None, "unchanged", ARN_A),
        (ARN_A, "present", ARN_A, True, None, "unchanged", ARN_A),
        (ARN_B, "present", ARN_A, False, None, "skipped_different", ARN_B),
        (ARN_B, "present", ARN_A, True, None, "replaced", ARN_A),
        # absent with a profile: only ours goes
        (None, "absent", ARN_A, False, None, "unchanged", None),
        (ARN_A, "absent", ARN_A, False, None, "disassociated", None),
        (ARN_B, "absent", ARN_A, False, None, "skipped_different", ARN_B),
        (ARN_B, "absent", ARN_A, True, None, "skipped_different", ARN_B),
        # absent without a profile: any association goes
        (ARN_B, "absent", None, False, None, "disassociated", None),
        (None, "absent", None, False, None, "unchanged", None),
        # absent with a profile name IAM no longer knows: matched by name
        (ARN_B, "absent", None, False, "b", "disassociated", None),
        (ARN_A, "absent", None, False, "b", "skipped_different", ARN_A),
    ],
)
def test_plan_instance(before, state, wanted, replace, name, action, after):
    assert ipa.plan_instance(before, state, wanted, replace, name) == {"action": action, "after": after}


@pytest.mark.parametrize(
    "arn, wanted_arn, wanted_name, expected",
    [
        (ARN_A, ARN_A, None, True),
        (ARN_A, ARN_B, None, False),
        (ARN_B, None, "b", True),
        (ARN_B, None, "team/b", False),
        (ARN_A, None, "b", False),
        (None, ARN_A, None, False),
        (ARN_A, None, None, False),
        # an ARN, when known, wins over the name
        (ARN_B, ARN_A, "b", False),
    ],
)
def test_profile_matches(arn, wanted_arn, wanted_name, expected):
    assert ipa.profile_matches(arn, wanted_arn, wanted_name) is expected


@pytest.mark.parametrize(
    "arn, name",
    [
        (ARN_A, "a"),
        (ARN_B, "b"),
        ("arn:aws-cn:iam::123456789012:instance-profile/x/y/z", "z"),
    ],
)
def test_profile_name_from_arn(arn, name):
    assert ipa.profile_name_from_arn(arn) == name


@pytest.mark.parametrize("value, expected", [(ARN_A, True), ("a", False), ("team/b", False)])
def test_is_arn(value, expected):
    assert ipa.is_arn(value) is expected


@pytest.mark.parametrize(
    "items, size, expected",
    [
        ([], 2, []),
        (["a"], 2, [["a"]]),
        (["a", "b", "c"], 2, [["a", "b"], ["c"]]),
        (["a", "b"], 2, [["a", "b"]]),
    ],
)
def test_chunks(items, size, expected):
    assert list(ipa.chunks(items, size)) == expected


def _instance(instance_id, state="running", arn=None):
    instance = {"InstanceId": instance_id, "State": {"Name": state}}
    if arn:
        instance["IamInstanceProfile"] = {"Arn": arn, "Id": "AIPAEXAMPLE"}
    return instance


def _association(instance_id, arn, state="associated", association_id=None):
    return {"InstanceId": instance_id, "State": state, "IamInstanceProfile": {"Arn": arn, "Id": "AIPAEXAMPLE"},
            "AssociationId": association_id or f"iip-assoc-{instance_id}"}


@pytest.mark.parametrize(
    "instances, associations, expected",
    [
        ([_instance("i-1")], [], {"i-1": {"arn": None, "association_id": None}}),
        ([_instance("i-1")], [_association("i-1", ARN_A)], {"i-1": {"arn": ARN_A, "association_id": "iip-assoc-i-1"}}),
        ([_instance("i-1")], [_association("i-1", ARN_A, "associating")],
         {"i-1": {"arn": ARN_A, "association_id": "iip-assoc-i-1"}}),
        # a disassociating association is not current
        ([_instance("i-1")], [_association("i-1", ARN_A, "disassociating")], {"i-1": {"arn": None, "association_id": None}}),
        # the association wins over what DescribeInstances reports
        ([_instance("i-1", arn=ARN_B)], [_association("i-1", ARN_A)],
         {"i-1": {"arn": ARN_A, "association_id": "iip-assoc-i-1"}}),
        # no association: DescribeInstances' profile, with nothing to act on
        ([_instance("i-1", arn=ARN_B)], [], {"i-1": {"arn": ARN_B, "association_id": None}}),
        # associations of other instances are ignored
        ([_instance("i-1")], [_association("i-2", ARN_A)], {"i-1": {"arn": None, "association_id": None}}),
    ],
)
def test_current_profiles(instances, associations, expected):
    assert ipa.current_profiles(instances, associations) == expected


@pytest.mark.parametrize(
    "requested, found, expected",
    [
        (None, [], []),
        ([], [_instance("i-1")], []),
        (["i-1"], [_instance("i-1")], []),
        (["i-2", "i-1", "i-3", "i-2"], [_instance("i-1")], ["i-2", "i-3"]),
    ],
)
def test_missing_instance_ids(requested, found, expected):
    assert ipa.missing_instance_ids(requested, found) == expected


def test_live_instances_drops_terminated_and_shutting_down_and_duplicates():
    instances = [_instance("i-1"), _instance("i-2", "stopped"), _instance("i-3", "terminated"),
                 _instance("i-4", "shutting-down"), _instance("i-5", "pending"), _instance("i-1")]
    assert [i["InstanceId"] for i in ipa.live_instances(instances)] == ["i-1", "i-2", "i-5"]


CURRENT = {
    "i-3": {"arn": ARN_B, "association_id": "iip-assoc-3"},
    "i-1": {"arn": None, "association_id": None},
    "i-2": {"arn": ARN_A, "association_id": "iip-assoc-2"},
}


@pytest.mark.parametrize(
    "state, wanted, replace, actions, changed, changed_ids, different",
    [
        ("present", ARN_A, False, ["associated", "unchanged", "skipped_different"], True, ["i-1"], ["i-3"]),
        ("present", ARN_A, True, ["associated", "unchanged", "replaced"], True, ["i-1", "i-3"], []),
        ("present", ARN_B, False, ["associated", "skipped_different", "unchanged"], True, ["i-1"], ["i-2"]),
        ("absent", ARN_A, False, ["unchanged", "disassociated", "skipped_different"], True, ["i-2"], ["i-3"]),
        ("absent", None, False, ["unchanged", "disassociated", "disassociated"], True, ["i-2", "i-3"], []),
    ],
)
def test_build_plan_and_summary(state, wanted, replace, actions, changed, changed_ids, different):
    plan = ipa.build_plan(CURRENT, state, wanted, replace)
    assert [s["instance_id"] for s in plan] == ["i-1", "i-2", "i-3"]
    assert [s["action"] for s in plan] == actions
    assert [s["association_id"] for s in plan] == [None, "iip-assoc-2", "iip-assoc-3"]
    summary = ipa.summarise(plan, wanted)
    assert summary["changed"] is changed
    assert summary["changed_instances"] == changed_ids
    assert summary["different"] == different
    assert summary["instance_profile_arn"] == wanted
    assert all(set(i) == {"instance_id", "before", "after", "action"} for i in summary["instances"])


@pytest.mark.parametrize("state, wanted", [("present", ARN_A), ("absent", ARN_B)])
def test_a_converged_plan_changes_nothing(state, wanted):
    current = {"i-1": {"arn": ARN_A if state == "present" else None, "association_id": None}}
    summary = ipa.summarise(ipa.build_plan(current, state, wanted, False), wanted)
    assert summary["changed"] is False
    assert summary["changed_instances"] == []


def test_empty_selection_changes_nothing():
    assert ipa.summarise(ipa.build_plan({}, "present", ARN_A, True), ARN_A) == {
        "changed": False, "instances": [], "changed_instances": [], "different": [], "instance_profile_arn": ARN_A,
    }


def test_different_warning_names_the_instances_and_the_fix():
    message = ipa.different_warning(["i-1", "i-2"], "ssm-lab-node")
    assert "i-1, i-2" in message
    assert "ssm-lab-node" in message
    assert "replace: true" in message


class FakeEC2:
    """Records the mutating calls apply_plan makes."""

    def __init__(self):
        self.calls = []

    def associate_iam_instance_profile(self, **kwargs):
        self.calls.append(("associate", kwargs))
        return {}

    def replace_iam_instance_profile_association(self, **kwargs):
        self.calls.append(("replace", kwargs))
        return {}

    def disassociate_iam_instance_profile(self, **kwargs):
        self.calls.append(("disassociate", kwargs))
        return {}


def _step(instance_id, action, association_id=None, before=None):
    return {"instance_id": instance_id, "action": action, "association_id": association_id, "before": before}


def test_apply_plan_calls_one_api_per_change():
    client = FakeEC2()
    plan = [
        _step("i-1", "associated"),
        _step("i-2", "unchanged", "iip-2", ARN_A),
        _step("i-3", "replaced", "iip-3", ARN_B),
        _step("i-4", "disassociated", "iip-4", ARN_A),
        _step("i-5", "skipped_different", "iip-5", ARN_B),
        # DescribeInstances reported a profile but there is no association to replace: associate
        _step("i-6", "replaced", None, ARN_B),
    ]
    ipa.apply_plan(client, plan, ARN_A)
    assert client.calls == [
        ("associate", {"IamInstanceProfile": {"Arn": ARN_A}, "InstanceId": "i-1"}),
        ("replace", {"IamInstanceProfile": {"Arn": ARN_A}, "AssociationId": "iip-3"}),
        ("disassociate", {"AssociationId": "iip-4"}),
        ("associate", {"IamInstanceProfile": {"Arn": ARN_A}, "InstanceId": "i-6"}),
    ]


def test_apply_plan_cannot_disassociate_without_an_association():
    client = FakeEC2()
    with pytest.raises(ipa.AnsibleEC2Error) as raised:
        ipa.apply_plan(client, [_step("i-1", "disassociated", None, ARN_A)], None)
    assert "i-1" in raised.value.message
    assert client.calls == []
