"""The documents the lab runs (ssm_lab/aws/documents.py), without a lab: their parameters as AWS declares them, and
the script a node runs for AWS-ApplyAnsiblePlaybooks. That a node really runs it: tests/integration
(test_module_ssm_association.py, pull.yml on a lab)."""

import json

import pytest
from ssm_lab.aws import documents

SOURCE = json.dumps({"path": "https://s3.amazonaws.com/bundles/pull/site-0123.zip"})


@pytest.mark.parametrize("document, parameters, message", [
    ("AWS-RunShellScript", {}, "Parameter commands is required."),
    ("AWS-RunShellScript", {"commands": ["id"], "PlaybookFile": ["x"]}, "Parameter PlaybookFile is not defined"),
    ("AWS-ApplyAnsiblePlaybooks", {"commands": ["id"]}, "Parameter commands is not defined"),
    ("AWS-ApplyAnsiblePlaybooks", {"SourceType": ["FTP"]}, "Parameter SourceType value FTP is not one of"),
    ("AWS-ApplyAnsiblePlaybooks", {"PlaybookFile": ["site.yml"]}, "Parameter SourceType is required."),
    ("AWS-ApplyAnsiblePlaybooks", {"Verbose": ["-x"]}, "Parameter Verbose value -x is not one of"),
    ("AWS-ApplyAnsiblePlaybooks", {"TimeoutSeconds": ["soon"]}, "Parameter TimeoutSeconds value soon is not a number"),
    ("AWS-ApplyAnsiblePlaybooks", {"SourceInfo": ["[1]"]}, "Parameter SourceInfo is not a JSON object."),
])
def test_parameters_the_document_does_not_take_are_refused(document, parameters, message):
    with pytest.raises(documents.ParameterError, match=message.replace(".", r"\.")):
        documents.check(document, parameters)


def test_defaults_fill_what_a_request_leaves_out():
    filled = documents.filled("AWS-ApplyAnsiblePlaybooks", {"SourceType": "S3", "PlaybookFile": ["site.yml"]})
    assert filled["SourceType"] == ["S3"] and filled["PlaybookFile"] == ["site.yml"]
    # AWS's document's defaults
    assert {name: value for name, value in filled.items() if name not in ("SourceType", "PlaybookFile")} == {
        "SourceInfo": ["{}"], "InstallDependencies": ["True"], "ExtraVariables": ["SSM=True"], "Check": ["False"],
        "Verbose": ["-v"], "TimeoutSeconds": ["3600"]}
    assert documents.filled("AWS-RunShellScript", {"commands": ["id"]}) == {"commands": ["id"]}


@pytest.mark.parametrize("path, expected", [
    ("https://s3.amazonaws.com/b/pull/k.zip", ("b", "pull/k.zip")),
    ("https://s3.eu-west-1.amazonaws.com/b/k.yml", ("b", "k.yml")),
    ("https://s3.cn-north-1.amazonaws.com.cn/b/k.zip", ("b", "k.zip")),
    ("https://b.s3.amazonaws.com/a%20b.zip", ("b", "a b.zip")),
    ("https://example.com/b/k.zip", None),
    ("http://s3.amazonaws.com/b/k.zip", None),
    ("https://s3.amazonaws.com/b/", None),
])
def test_s3_object(path, expected):
    assert documents.s3_object(path) == expected


def test_the_script_fetches_unzips_and_runs_the_playbook_against_localhost():
    parameters = documents.filled("AWS-ApplyAnsiblePlaybooks", {
        "SourceType": ["S3"], "SourceInfo": [SOURCE], "InstallDependencies": ["False"], "PlaybookFile": ["site.yml"],
        "ExtraVariables": ["SSM=True role=web"], "Check": ["True"], "Verbose": ["-vv"], "TimeoutSeconds": ["120"]})
    lines, timeout = documents.ansible_script(parameters, lambda bucket, key: f"http://lab/{bucket}/{key}?signed")
    script = "\n".join(lines)
    assert timeout == 120
    # The presigned URL goes to curl on its stdin (printf is the shell's own), never in its arguments.
    assert ("printf 'url = \"%s\"\\n' 'http://lab/bundles/pull/site-0123.zip?signed' | curl -fsS --retry 2 -K - "
            "-o site-0123.zip ||") in script
    assert "unzip -o -q site-0123.zip" in script
    assert lines[-1] == "ansible-playbook -i localhost, -c local -e 'SSM=True role=web' --check -vv site.yml"


@pytest.mark.parametrize("change, message", [
    ({"InstallDependencies": ["True"]}, "set InstallDependencies to False"),
    ({"SourceType": ["GitHub"]}, "SourceType GitHub cannot be fetched by the lab"),
    ({"SourceInfo": [json.dumps({"path": "https://example.com/x.zip"})]}, "is not the URL of an S3 object"),
])
def test_what_the_lab_cannot_do_fails_on_the_node_with_a_message(change, message):
    parameters = documents.filled("AWS-ApplyAnsiblePlaybooks", {
        "SourceType": ["S3"], "SourceInfo": [SOURCE], "InstallDependencies": ["False"], **change})
    lines, _timeout = documents.ansible_script(parameters, lambda bucket, key: "unused")
    assert lines[-1] == "exit 1" and message in "\n".join(lines)
