# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure helpers of bastionless.ssm.ssm_association: the check-mode prediction and the returned association."""

from ansible_collections.bastionless.ssm.plugins.module_utils import _association as assoc
from ansible_collections.bastionless.ssm.plugins.modules import ssm_association as sa

BEFORE = {"AssociationId": "a-1", "AssociationName": "web", "AssociationVersion": "3", "Name": "AWS-RunShellScript",
          "Parameters": {"commands": ["uptime"]}, "Targets": [{"Key": "tag:Role", "Values": ["web"]}],
          "MaxErrors": "1", "ScheduleExpression": "rate(1 hour)"}


def test_prediction_of_an_update_bumps_the_version_and_drops_removed_settings():
    settings = assoc.merged(assoc.current(BEFORE), {"MaxErrors": None, "MaxConcurrency": "2"})
    predicted = sa.predicted(BEFORE, settings, "web")
    assert predicted["AssociationVersion"] == "4"
    assert "MaxErrors" not in predicted and predicted["MaxConcurrency"] == "2"
    assert predicted["ScheduleExpression"] == "rate(1 hour)"
    assert BEFORE["MaxErrors"] == "1"  # a prediction made on a copy


def test_prediction_of_a_creation_has_no_id():
    settings = assoc.merged(None, {"Name": "AWS-RunShellScript", "Targets": BEFORE["Targets"]})
    predicted = sa.predicted(None, settings, "web")
    assert predicted["AssociationName"] == "web" and "AssociationId" not in predicted


def test_association_result_keeps_parameter_names_and_snakes_the_rest():
    result = sa.association_result(BEFORE)
    assert result["parameters"] == {"commands": ["uptime"]}
    assert result["targets"] == [{"key": "tag:Role", "values": ["web"]}]
    assert result["association_version"] == "3" and result["max_errors"] == "1"
    assert sa.association_result(None) == {}
