# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The kms_key_form filter, the shared name rules behind it and the roles' filters, and how those filters take a
role's inputs."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bastionless.ssm.plugins.filter import kms
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _names
from ansible_collections.bastionless.ssm.plugins.plugin_utils._role_inputs import role_inputs

UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK = "mrk-1234abcd12ab34cd56ef1234567890ab"


@pytest.mark.parametrize("reference, form", [
    (f"arn:aws:kms:us-east-1:123456789012:key/{UUID}", "key_arn"),
    (f"arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/{MRK}", "key_arn"),
    (f"  arn:aws:kms:us-east-1:123456789012:key/{UUID} ", "key_arn"),
    ("arn:aws:kms:us-east-1:123456789012:alias/team/transfer", "alias_arn"),
    (UUID, "key_id"),
    (MRK, "key_id"),
    ("alias/transfer", "alias"),
    ("arn:aws:kms:us-east-1:123456789012:key/not-a-uuid", ""),
    ("arn:aws:kms:us-east-1:12345:key/" + UUID, ""),
    ("arn:aws:s3:::bucket", ""),
    (UUID.upper(), ""),
    ("alias/", ""),
    ("alias/with space", ""),
    ("my transfer key", ""),
    ("", ""),
    (None, ""),
    (42, ""),
])
def test_kms_key_form(reference, form):
    assert kms.FilterModule().filters()["kms_key_form"](reference) == form


@pytest.mark.parametrize("name, ok", [
    ("team-transfer", True), ("a.b-c", True), ("abc", True), ("a" * 63, True),
    ("ab", False), ("a" * 64, False), ("Team", False), ("team_transfer", False), ("-team", False), ("team.", False),
    ("a..b", False), ("192.168.1.1", False), ("xn--team", False), ("sthree-team", False),
    ("amzn-s3-demo-team", False), ("team-s3alias", False), ("team--ol-s3", False), ("team.mrap", False),
    ("team--x-s3", False), ("team--table-s3", False), (None, False),
])
def test_bucket_names(name, ok):
    assert _names.s3_bucket_name_ok(name) is ok


def test_role_inputs_fill_defaults_and_refuse_what_they_do_not_know():
    assert role_inputs({"a": 2}, {"a": 1, "b": 1}, "f") == {"a": 2, "b": 1}
    with pytest.raises(AnsibleFilterError, match=r"^f: bee, c is not an input it knows; use a, b\.$"):
        role_inputs({"c": 1, "bee": 2}, {"a": 1, "b": 1}, "f")
    with pytest.raises(AnsibleFilterError, match=r"^f: give the role's inputs as a dict .*not list\.$"):
        role_inputs([], {"a": 1}, "f")
