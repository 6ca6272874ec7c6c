# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Why a session could not start (plugins/plugin_utils/_target_diagnosis.py): the region, the instance there, its
agent, and the pointer to ssm_preflight. The wording is what the session connection appends to StartSession's error."""

import pytest
from botocore.exceptions import ClientError

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _target_diagnosis as diagnosis

REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1")
NODE = "i-0123456789abcdef0"


@pytest.mark.parametrize("region, expected", [
    ("us-east-1", None),
    ("us-esat-1", "'us-esat-1' is not an AWS region (did you mean us-east-1?): fix "
                  "ansible_aws_ssm_region or AWS_REGION"),
    ("mars-1", "'mars-1' is not an AWS region: fix ansible_aws_ssm_region or AWS_REGION"),
    ("", "no region is set: set ansible_aws_ssm_region (the managed_nodes inventory sets it for each host), "
         "or AWS_REGION"),
])
def test_region_problem(region, expected):
    assert diagnosis.region_problem(region, REGIONS) == expected


def test_every_region_botocore_knows_is_a_region_and_the_nearest_is_named():
    regions = diagnosis.known_regions()
    assert {"us-east-1", "eu-south-2", "cn-north-1", "us-gov-west-1"} <= regions
    assert diagnosis.region_problem("us-esat-1", regions).startswith("'us-esat-1' is not an AWS region (did you mean "
                                                                     "us-east-1?)")
    assert diagnosis.region_problem("eu-west", regions).startswith("'eu-west' is not an AWS region (did you mean "
                                                                   "eu-west-")
    assert diagnosis.region_problem("east", regions).startswith("'east' is not an AWS region: ")


PREFLIGHT = "Run playbooks/preflight.yml (bastionless.ssm.ssm_preflight) on the node for the cause and the fix."


@pytest.mark.parametrize("facts, expected", [
    ({"registered": False, "ec2_state": None},
     f"There is no EC2 instance {NODE} in us-west-2: check ansible_aws_ssm_instance_id and ansible_aws_ssm_region "
     "(the managed_nodes inventory sets both for each host)."),
    ({"registered": False, "ec2_state": "stopped"},
     f"Instance {NODE} is stopped in us-west-2: start it, then wait for its agent to be Online."),
    ({"registered": False, "ec2_state": "running"},
     f"EC2 instance {NODE} is running in us-west-2 but is not registered with Systems Manager there: its agent has "
     f"never connected (instance profile, network path or agent). {PREFLIGHT}"),
    ({"registered": True, "ping_status": "ConnectionLost", "last_ping": "2026-12-06 22:00:00", "ec2_state": "running"},
     f"{NODE} is registered in us-west-2 but its agent is offline: PingStatus ConnectionLost (last ping "
     f"2026-12-06 22:00:00). {PREFLIGHT}"),
    ({"registered": True, "ping_status": "Online", "ec2_state": "running"},
     f"{NODE} is Online in us-west-2; the session itself was refused (the message above), a Session document or the "
     f"caller's permissions, for instance. {PREFLIGHT}"),
    ({"registered": None, "ec2_state": ""}, PREFLIGHT),
])
def test_explain(facts, expected):
    assert diagnosis.explain(NODE, "us-west-2", {"ping_status": "", "last_ping": "", **facts}) == expected


def test_a_hybrid_node_is_asked_of_systems_manager_only():
    facts = {"registered": False, "ping_status": "", "last_ping": "", "ec2_state": ""}
    assert diagnosis.explain("mi-0123456789abcdef0", "us-east-1", facts) == (
        "mi-0123456789abcdef0 in us-east-1 but is not registered with Systems Manager there: its agent has never "
        f"connected (instance profile, network path or agent). {PREFLIGHT}")


class _Fake:
    """A client answering one call from a table (a dict, or an exception to raise)."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    def __getattr__(self, name):
        def call(**kwargs):
            self.calls.append((name, kwargs))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call


def _not_found(code):
    return ClientError({"Error": {"Code": code, "Message": "not there"}}, "DescribeInstances")


def test_look_up_reads_systems_manager_and_ec2():
    ssm = _Fake(describe_instance_information={"InstanceInformationList": [
        {"InstanceId": NODE, "PingStatus": "ConnectionLost", "LastPingDateTime": "yesterday"}]})
    ec2 = _Fake(describe_instances={"Reservations": [{"Instances": [{"State": {"Name": "running"}}]}]})
    assert diagnosis.look_up(NODE, ssm, ec2) == {"registered": True, "ping_status": "ConnectionLost",
                                                 "last_ping": "yesterday", "ec2_state": "running"}
    assert ssm.calls == [("describe_instance_information",
                          {"Filters": [{"Key": "InstanceIds", "Values": [NODE]}]})]


def test_look_up_says_unknown_when_a_call_fails_and_none_when_ec2_has_no_such_instance():
    ssm = _Fake(describe_instance_information=_not_found("AccessDeniedException"))
    assert diagnosis.look_up(NODE, ssm, _Fake(describe_instances=_not_found("InvalidInstanceID.NotFound"))) == {
        "registered": None, "ping_status": "", "last_ping": "", "ec2_state": None}
    assert diagnosis.look_up(NODE, ssm, _Fake(describe_instances=_not_found("UnauthorizedOperation")))[
        "ec2_state"] == ""


def test_diagnose_names_a_region_that_is_none_before_asking_anything():
    def clients(service):
        raise AssertionError(f"no {service} call for a region that does not exist")

    assert diagnosis.diagnose(NODE, "us-esat-1", REGIONS, clients).startswith("'us-esat-1' is not an AWS region")


@pytest.mark.parametrize("instance_id", ["i-0abc123", "i-0123456789abcdef", "I-0123456789abcdef0", "i-0123456789abcdeg0",
                                         "0123456789abcdef0", "mi-0123456789abcdef", "web-1"])
def test_diagnose_names_an_id_that_has_no_form_of_a_node_id_before_asking_anything(instance_id):
    def clients(service):
        raise AssertionError(f"no {service} call for an id that cannot exist")

    assert diagnosis.diagnose(instance_id, "us-east-1", REGIONS, clients) == (
        f"'{instance_id}' is not the id of a managed node (i- and 8 or 17 hexadecimal digits for an EC2 instance, mi- "
        "and 17 for a hybrid node): check ansible_aws_ssm_instance_id (the managed_nodes inventory sets it for each "
        "host) or the host name the play uses.")


@pytest.mark.parametrize("instance_id", [NODE, "i-0123abcd", "mi-0123456789abcdef0"])
def test_the_forms_of_node_ids_are_no_problem(instance_id):
    assert diagnosis.id_problem(instance_id) is None


def test_the_region_problem_names_the_fix_its_caller_gives():
    assert diagnosis.region_problem("us-esat-1", REGIONS, fix="fix the regions key of the inventory file") == (
        "'us-esat-1' is not an AWS region (did you mean us-east-1?): fix the regions key of the inventory file")


def test_a_refused_session_names_what_to_change():
    assert diagnosis.refusal_fix("InvalidDocument").startswith("check ansible_aws_ssm_document: it must name a Session")
    assert "ssm:StartSession" in diagnosis.refusal_fix("AccessDeniedException")
    assert diagnosis.refusal_fix("TargetNotConnected") is None


@pytest.mark.parametrize("code", ["ExpiredTokenException", "ExpiredToken", "RequestExpired"])
def test_expired_credentials_name_the_fix(code):
    assert diagnosis.refusal_fix(code) == (
        "the session token of these credentials has expired: get new temporary credentials (aws sso login, assume the "
        "role again, or a new AWS_SESSION_TOKEN) and run again")
