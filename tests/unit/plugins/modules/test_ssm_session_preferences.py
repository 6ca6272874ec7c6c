"""bastionless.ssm.ssm_session_preferences: validation, the inputs and their defaults, the plan, pruning, and the
document writes against an in-memory SSM (which, unlike the lab's moto, also answers ListDocumentVersions)."""

import json
from copy import deepcopy

import botocore.exceptions
import pytest

from ansible_collections.bastionless.ssm.plugins.modules import ssm_session_preferences as sp

NAME = sp.DEFAULT_NAME
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"


def params(**overrides):
    base = {option: None for option, _key, _kind in sp.INPUT_OPTIONS}
    base.update(name=NAME, state="present", prune_versions=None)
    base.update(overrides)
    return base


def defaults(**changes):
    inputs = deepcopy(sp.DEFAULT_INPUTS)
    inputs.update(changes)
    return inputs


# --- the mapping and AWS's defaults -------------------------------------------------------------------------


def test_every_input_has_one_option_and_a_default():
    keys = [key for _option, key, _kind in sp.INPUT_OPTIONS]
    assert sorted(keys) == sorted(sp.DEFAULT_INPUTS)
    assert len({option for option, _key, _kind in sp.INPUT_OPTIONS}) == len(keys)


def test_aws_defaults_are_those_of_the_aws_documentation():
    assert sp.DEFAULT_INPUTS == {
        "s3BucketName": "", "s3KeyPrefix": "", "s3EncryptionEnabled": True,
        "cloudWatchLogGroupName": "", "cloudWatchEncryptionEnabled": True, "cloudWatchStreamingEnabled": True,
        "idleSessionTimeout": "20", "maxSessionDuration": "", "kmsKeyId": "",
        "runAsEnabled": False, "runAsDefaultUser": "", "shellProfile": {"windows": "", "linux": ""},
    }
    assert sp.AWS_DESCRIPTION == "Document to hold regional settings for Session Manager"


@pytest.mark.parametrize(
    "option, value, key, stored",
    [
        ("s3_bucket_name", "logs-bucket", "s3BucketName", "logs-bucket"),
        ("s3_key_prefix", "sessions/", "s3KeyPrefix", "sessions/"),
        ("s3_encryption_enabled", False, "s3EncryptionEnabled", False),
        ("cloudwatch_log_group_name", "/ssm/sessions", "cloudWatchLogGroupName", "/ssm/sessions"),
        ("cloudwatch_encryption_enabled", False, "cloudWatchEncryptionEnabled", False),
        ("cloudwatch_streaming_enabled", False, "cloudWatchStreamingEnabled", False),
        ("kms_key_id", "alias/sessions", "kmsKeyId", "alias/sessions"),
        ("idle_session_timeout", 15, "idleSessionTimeout", "15"),
        ("max_session_duration", 480, "maxSessionDuration", "480"),
        ("max_session_duration", 0, "maxSessionDuration", ""),
        ("run_as_enabled", True, "runAsEnabled", True),
        ("run_as_default_user", "ops", "runAsDefaultUser", "ops"),
        ("shell_profile", {"linux": "exec bash -l", "windows": None}, "shellProfile",
         {"windows": "", "linux": "exec bash -l"}),
        ("shell_profile", {"linux": "cd ~", "windows": "Set-Location C:\\"}, "shellProfile",
         {"windows": "Set-Location C:\\", "linux": "cd ~"}),
    ],
)
def test_each_option_sets_its_input_and_only_that(option, value, key, stored):
    wanted = sp.wanted_inputs(defaults(), params(**{option: value}))
    assert wanted[key] == stored
    assert {k: v for k, v in wanted.items() if k != key} == {k: v for k, v in defaults().items() if k != key}


def test_unset_options_leave_the_current_inputs_alone():
    current = defaults(s3BucketName="kept", idleSessionTimeout="45", runAsEnabled=True, runAsDefaultUser="ops",
                       shellProfile={"windows": "win", "linux": "lin"}, futureInput="untouched")
    original = deepcopy(current)
    wanted = sp.wanted_inputs(current, params(idle_session_timeout=10, shell_profile={"linux": "new", "windows": None}))
    assert wanted == dict(original, idleSessionTimeout="10", shellProfile={"windows": "win", "linux": "new"})
    assert current == original  # worked on a copy


@pytest.mark.parametrize(
    "inputs, expected",
    [
        (None, defaults()),
        ({}, defaults()),
        ("not a dict", defaults()),
        # missing inputs take AWS's defaults
        ({"s3BucketName": "b"}, defaults(s3BucketName="b")),
        # booleans written as strings, timeouts written as numbers
        ({"s3EncryptionEnabled": "false", "runAsEnabled": "True", "idleSessionTimeout": 15,
          "maxSessionDuration": 60},
         defaults(s3EncryptionEnabled=False, runAsEnabled=True, idleSessionTimeout="15", maxSessionDuration="60")),
        # a half shell profile keeps AWS's empty one for the other platform
        ({"shellProfile": {"linux": "echo hi"}}, defaults(shellProfile={"windows": "", "linux": "echo hi"})),
        ({"shellProfile": None}, defaults()),
        ({"kmsKeyId": None}, defaults()),
        # inputs the module does not know are kept as they are
        ({"someNewInput": {"a": 1}, "otherNewInput": None},
         dict(defaults(), someNewInput={"a": 1}, otherNewInput=None)),
        # a boolean that is no boolean stays as it is (and so differs from anything the module writes)
        ({"runAsEnabled": "maybe"}, defaults(runAsEnabled="maybe")),
    ],
)
def test_effective_inputs(inputs, expected):
    assert sp.effective_inputs(inputs) == expected


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, problem",
    [
        ("logs-bucket", None),
        ("a.b-c", None),
        ("abc", None),
        ("a" * 63, None),
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("Logs", "lowercase letters"),
        ("logs_bucket", "lowercase letters"),
        ("s3://logs", "lowercase letters"),
        ("-logs", "start and end"),
        ("logs.", "start and end"),
        ("logs..bucket", "two dots"),
        ("192.168.5.4", "IP address"),
        ("010.1.1.300", "IP address"),
        ("1.2.3", None),
        ("xn--logs", "prefix xn--"),
        ("sthree-logs", "prefix sthree-"),
        ("amzn-s3-demo-bucket", "prefix amzn-s3-demo-"),
        ("logs-s3alias", "suffix -s3alias"),
        ("logs--ol-s3", "suffix --ol-s3"),
        ("logs.mrap", "suffix .mrap"),
        ("logs--x-s3", "suffix --x-s3"),
    ],
)
def test_bucket_name_problem(name, problem):
    found = sp.bucket_name_problem(name)
    if problem is None:
        assert found is None
    else:
        assert problem in found


@pytest.mark.parametrize(
    "key, problem",
    [
        (KEY_ID, None),
        (KEY_ID.upper(), None),
        (MRK_ID, None),
        ("alias/session-manager", None),
        ("alias/aws/ssm", None),
        (f"arn:aws:kms:us-east-1:123456789012:key/{KEY_ID}", None),
        ("arn:aws:kms:us-east-1:123456789012:alias/session-manager", None),
        (f"arn:aws-cn:kms:us-east-1:123456789012:key/{KEY_ID}", None),
        ("session-manager", "is not a KMS key reference"),
        ("1234", "is not a KMS key reference"),
        ("alias/", "is not a KMS key reference"),
        ("arn:aws:s3:::bucket", "is not a KMS key reference"),
        (f"arn:aws:kms:eu-west-1:123456789012:key/{KEY_ID}",
         "is in eu-west-1, but these preferences are for us-east-1"),
    ],
)
def test_kms_key_problem(key, problem):
    found = sp.kms_key_problem(key, "us-east-1")
    if problem is None:
        assert found is None
    else:
        assert found.startswith("kms_key_id: ") and problem in found


@pytest.mark.parametrize(
    "overrides, messages",
    [
        ({}, []),
        ({"idle_session_timeout": 1, "max_session_duration": 1440}, []),
        ({"idle_session_timeout": 60, "max_session_duration": 0}, []),
        ({"s3_bucket_name": "", "kms_key_id": "", "run_as_default_user": "", "cloudwatch_log_group_name": ""}, []),
        ({"run_as_default_user": "ssm-user", "s3_bucket_name": "logs", "kms_key_id": "alias/x"}, []),
        ({"run_as_default_user": "_svc", "cloudwatch_log_group_name": "/aws/ssm/sessions#1"}, []),
        ({"idle_session_timeout": 0}, ["idle_session_timeout must be from 1 to 60 minutes"]),
        ({"idle_session_timeout": 61}, ["idle_session_timeout must be from 1 to 60 minutes, the range AWS accepts, "
                                        "not 61"]),
        ({"max_session_duration": 1441}, ["max_session_duration must be from 1 to 1440 minutes, the range AWS "
                                          "accepts, or 0 for no maximum, not 1441"]),
        ({"max_session_duration": -5}, ["max_session_duration must be from 1 to 1440"]),
        ({"s3_bucket_name": "Bad_Bucket"}, ["s3_bucket_name: 'Bad_Bucket' is not a bucket name AWS accepts"]),
        ({"kms_key_id": "nope"}, ["kms_key_id: 'nope' is not a KMS key reference"]),
        ({"run_as_default_user": "Bad User"}, ["run_as_default_user: 'Bad User' is not a user name Linux accepts"]),
        ({"run_as_default_user": "1abc"}, ["run_as_default_user: '1abc'"]),
        ({"run_as_default_user": "a" * 33}, ["run_as_default_user: "]),
        ({"cloudwatch_log_group_name": "bad group"}, ["cloudwatch_log_group_name: 'bad group'"]),
        ({"name": "ab"}, ["name: 'ab' is not a document name AWS accepts"]),
        ({"name": "AWS-StartSSHSession"}, ["name: 'AWS-StartSSHSession'"]),
        ({"prune_versions": 0}, ["prune_versions must be at least 1"]),
        # one message per problem, all at once
        ({"idle_session_timeout": 0, "max_session_duration": 2000, "run_as_default_user": "Root"},
         ["idle_session_timeout", "max_session_duration", "run_as_default_user"]),
        # state=absent ignores the inputs, so their values do not matter
        ({"state": "absent", "idle_session_timeout": 0, "s3_bucket_name": "Bad"}, []),
        ({"state": "absent", "prune_versions": 0}, ["prune_versions must be at least 1"]),
    ],
)
def test_validate_params(overrides, messages):
    errors = sp.validate_params(params(**overrides), "us-east-1")
    assert len(errors) == len(messages), errors
    for error, message in zip(errors, messages):
        assert error.startswith(message) or message in error


def test_ignored_with_absent():
    assert sp.ignored_with_absent(params(state="absent", idle_session_timeout=5, run_as_enabled=False)) == [
        "idle_session_timeout", "run_as_enabled"]
    assert sp.ignored_with_absent(params(idle_session_timeout=5)) == []


@pytest.mark.parametrize(
    "inputs, warns",
    [
        (defaults(runAsEnabled=True), True),
        (defaults(runAsEnabled=True, runAsDefaultUser="ops"), False),
        (defaults(runAsEnabled=False), False),
    ],
)
def test_run_as_warning(inputs, warns):
    assert (sp.run_as_warning(inputs) is not None) is warns


# --- content and the plan ---------------------------------------------------------------------------------


def test_rendered_content_is_a_preferences_document():
    inputs = defaults(idleSessionTimeout="15", shellProfile={"windows": "w", "linux": "l"})
    content = json.loads(sp.render_content(inputs))
    assert content == {"schemaVersion": "1.0", "description": sp.AWS_DESCRIPTION, "sessionType": "Standard_Stream",
                       "inputs": inputs}
    assert json.loads(sp.render_content(inputs, "kept"))["description"] == "kept"
    assert sp.content_matches(content, inputs)


@pytest.mark.parametrize(
    "content, matches",
    [
        ({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {}}, True),
        ({"schemaVersion": "1.0", "sessionType": "Standard_Stream"}, True),
        ({"schemaVersion": 1.0, "sessionType": "Standard_Stream", "inputs": {"runAsEnabled": "false"}}, True),
        ({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {"idleSessionTimeout": 20}}, True),
        ({"schemaVersion": "1.0", "sessionType": "Port", "inputs": {}}, False),
        ({"schemaVersion": "2.2", "sessionType": "Standard_Stream", "inputs": {}}, False),
        ({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {"idleSessionTimeout": "5"}}, False),
        (None, False),
    ],
)
def test_content_matches_the_defaults(content, matches):
    assert sp.content_matches(content, defaults()) is matches


@pytest.mark.parametrize(
    "content, document_format, parsed",
    [
        ('{"schemaVersion": "1.0"}', "JSON", {"schemaVersion": "1.0"}),
        ("schemaVersion: '1.0'\ninputs:\n  runAsEnabled: true\n", "YAML",
         {"schemaVersion": "1.0", "inputs": {"runAsEnabled": True}}),
        ("{not json", "JSON", None),
        ("[1, 2]", "JSON", None),
        ("", "JSON", None),
    ],
)
def test_parse_content(content, document_format, parsed):
    assert sp.parse_content(content, document_format) == parsed


def _current(inputs, session_type="Standard_Stream"):
    return {"content": {"schemaVersion": "1.0", "sessionType": session_type, "inputs": inputs},
            "default_version": "1", "latest_version": "1"}


@pytest.mark.parametrize(
    "current, overrides, changed, wanted",
    [
        # a missing document is created, with the defaults for whatever is not set
        (None, {"idle_session_timeout": 15}, True, defaults(idleSessionTimeout="15")),
        (None, {}, True, defaults()),
        # absent on a missing document: AWS's defaults are already in force
        (None, {"state": "absent"}, False, None),
        # taking over: only the option set changes; what the document has stays
        (_current({"s3BucketName": "there", "shellProfile": {"linux": "p"}}), {"idle_session_timeout": 15}, True,
         defaults(s3BucketName="there", shellProfile={"windows": "", "linux": "p"}, idleSessionTimeout="15")),
        (_current({"idleSessionTimeout": "15"}), {"idle_session_timeout": 15}, False,
         defaults(idleSessionTimeout="15")),
        (_current({}), {"run_as_enabled": False}, False, defaults()),
        # a Session document of the wrong session type is rewritten even when its inputs match
        (_current({}, "Port"), {}, True, defaults()),
        # absent restores the defaults, and drops inputs the defaults do not have
        (_current({"runAsEnabled": True, "runAsDefaultUser": "ops"}), {"state": "absent"}, True, defaults()),
        (_current({"futureInput": 1}), {"state": "absent"}, True, defaults()),
        (_current({}), {"state": "absent"}, False, defaults()),
        (_current({"runAsEnabled": "false", "idleSessionTimeout": 20}), {"state": "absent"}, False, defaults()),
    ],
)
def test_plan(current, overrides, changed, wanted):
    assert sp.plan(current, params(**overrides)) == (changed, wanted)


@pytest.mark.parametrize(
    "versions, default, keep, pruned",
    [
        (["1", "2", "3"], "3", None, []),
        (["1", "2", "3"], "3", 3, []),
        (["1", "2", "3"], "3", 5, []),
        (["1", "2", "3"], "3", 2, ["1"]),
        (["1", "2", "3"], "3", 1, ["1", "2"]),
        # the default is kept even when it is the oldest
        (["1", "2", "3"], "1", 1, ["2", "3"]),
        (["1", "2", "3"], "2", 2, ["1"]),
        # numeric order, not string order
        (["9", "10", "11", "12"], "12", 2, ["9", "10"]),
        (["12", "10", "9", "11"], "12", 3, ["9"]),
        ([], None, 1, []),
    ],
)
def test_plan_prune(versions, default, keep, pruned):
    assert sp.plan_prune(versions, default, keep) == pruned


@pytest.mark.parametrize("latest, following", [(None, "1"), ("1", "2"), ("9", "10"), ("$LATEST", "1")])
def test_next_version(latest, following):
    assert sp.next_version(latest) == following


# --- against an in-memory SSM and KMS -------------------------------------------------------------------------


def _error(code, operation):
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}}, operation)


class FakeSSM:
    """Documents with versions, as SSM keeps them; DuplicateDocumentContent against every version (as moto)."""

    def __init__(self, documents=None, document_type="Session"):
        self.docs = {}
        self.calls = []
        self.type = document_type
        for name, contents in (documents or {}).items():
            self.docs[name] = {"versions": {str(i + 1): c for i, c in enumerate(contents)},
                               "default": str(len(contents)), "latest": str(len(contents))}
        self.exists_on_create = None  # content a concurrent creator writes first
        self.version_limit = None

    def _doc(self, name, operation):
        if name not in self.docs:
            raise _error("InvalidDocument", operation)
        return self.docs[name]

    def describe_document(self, Name):
        self.calls.append("DescribeDocument")
        doc = self._doc(Name, "DescribeDocument")
        return {"Document": {"Name": Name, "DocumentType": self.type, "DefaultVersion": doc["default"],
                             "LatestVersion": doc["latest"], "DocumentVersion": doc["default"],
                             "Description": json.loads(doc["versions"][doc["default"]]).get("description")}}

    def get_document(self, Name, DocumentVersion):
        self.calls.append(f"GetDocument {DocumentVersion}")
        doc = self._doc(Name, "GetDocument")
        if DocumentVersion not in doc["versions"]:
            raise _error("InvalidDocument", "GetDocument")
        return {"Name": Name, "DocumentVersion": DocumentVersion, "Content": doc["versions"][DocumentVersion],
                "DocumentFormat": "JSON", "DocumentType": self.type}

    def create_document(self, Name, Content, DocumentType, DocumentFormat):
        self.calls.append("CreateDocument")
        assert (DocumentType, DocumentFormat) == ("Session", "JSON")
        if self.exists_on_create is not None:
            self.docs[Name] = {"versions": {"1": self.exists_on_create}, "default": "1", "latest": "1"}
        if Name in self.docs:
            raise _error("DocumentAlreadyExists", "CreateDocument")
        self.docs[Name] = {"versions": {"1": Content}, "default": "1", "latest": "1"}
        return {"DocumentDescription": {"Name": Name, "DocumentVersion": "1"}}

    def update_document(self, Name, Content, DocumentVersion, DocumentFormat):
        self.calls.append("UpdateDocument")
        assert (DocumentVersion, DocumentFormat) == ("$LATEST", "JSON")
        doc = self._doc(Name, "UpdateDocument")
        if Content in doc["versions"].values():
            raise _error("DuplicateDocumentContent", "UpdateDocument")
        if self.version_limit is not None and len(doc["versions"]) >= self.version_limit:
            raise _error("DocumentVersionLimitExceeded", "UpdateDocument")
        version = str(int(doc["latest"]) + 1)
        doc["versions"][version] = Content
        doc["latest"] = version
        return {"DocumentDescription": {"Name": Name, "DocumentVersion": version}}

    def update_document_default_version(self, Name, DocumentVersion):
        self.calls.append(f"UpdateDocumentDefaultVersion {DocumentVersion}")
        self._doc(Name, "UpdateDocumentDefaultVersion")["default"] = DocumentVersion

    def get_paginator(self, operation):
        assert operation == "list_document_versions"
        fake = self

        class Paginator:
            def paginate(self, Name):
                fake.calls.append("ListDocumentVersions")
                doc = fake._doc(Name, "ListDocumentVersions")

                class Pages:
                    def build_full_result(self):
                        return {"DocumentVersions": [{"DocumentVersion": v, "IsDefaultVersion": v == doc["default"]}
                                                     for v in sorted(doc["versions"], key=int, reverse=True)]}

                return Pages()

        return Paginator()

    def delete_document(self, Name, DocumentVersion):
        self.calls.append(f"DeleteDocument {DocumentVersion}")
        doc = self._doc(Name, "DeleteDocument")
        assert DocumentVersion != doc["default"]
        del doc["versions"][DocumentVersion]

    def content(self, name, version=None):
        doc = self.docs[name]
        return json.loads(doc["versions"][version or doc["default"]])

    def mutations(self):
        return [c for c in self.calls if not c.startswith(("Describe", "Get", "List"))]


def _doc(inputs, description="made elsewhere", session_type="Standard_Stream"):
    return json.dumps({"schemaVersion": "1.0", "description": description, "sessionType": session_type,
                       "inputs": inputs})


class FakeKMS:
    def __init__(self, keys):
        self.keys = keys

    def describe_key(self, KeyId):
        if KeyId not in self.keys:
            raise _error("NotFoundException", "DescribeKey")
        return {"KeyMetadata": self.keys[KeyId]}


class FakeModule:
    def __init__(self, ssm, check_mode=False, diff=True, kms=None, **overrides):
        self.params = params(**overrides)
        self.check_mode = check_mode
        self._diff = diff
        self.region = "us-east-1"
        self.warnings = []
        self._clients = {"ssm": ssm, "kms": kms or FakeKMS({})}

    def client(self, service):
        return self._clients[service]

    def warn(self, message):
        self.warnings.append(message)


def test_a_missing_document_is_created_and_check_mode_creates_nothing():
    ssm = FakeSSM()
    result = sp.run(FakeModule(ssm, check_mode=True, idle_session_timeout=15))
    assert result["changed"] is True
    assert result["document"] == {"name": NAME, "default_version": "1", "latest_version": "1",
                                  "document_version": "1", "inputs": defaults(idleSessionTimeout="15")}
    assert result["diff"] == {"before": {}, "after": defaults(idleSessionTimeout="15")}
    assert ssm.docs == {} and ssm.mutations() == []

    result = sp.run(FakeModule(ssm, idle_session_timeout=15))
    assert result["changed"] is True and ssm.mutations() == ["CreateDocument"]
    assert ssm.content(NAME) == {"schemaVersion": "1.0", "description": sp.AWS_DESCRIPTION,
                                 "sessionType": "Standard_Stream", "inputs": defaults(idleSessionTimeout="15")}
    assert result["document"]["inputs"] == defaults(idleSessionTimeout="15")

    ssm.calls.clear()
    result = sp.run(FakeModule(ssm, idle_session_timeout=15))
    assert result["changed"] is False and ssm.mutations() == []


def test_an_existing_document_is_taken_over_one_input_at_a_time():
    ssm = FakeSSM({NAME: [_doc({"s3BucketName": "there", "shellProfile": {"linux": "echo hi", "windows": "w"}})]})
    result = sp.run(FakeModule(ssm, idle_session_timeout=10))
    assert result["changed"] is True
    assert ssm.mutations() == ["UpdateDocument", "UpdateDocumentDefaultVersion 2"]
    content = ssm.content(NAME)
    assert content["description"] == "made elsewhere"
    assert content["inputs"] == defaults(s3BucketName="there", idleSessionTimeout="10",
                                         shellProfile={"windows": "w", "linux": "echo hi"})
    assert result["document"]["default_version"] == result["document"]["latest_version"] == "2"
    assert result["diff"]["before"]["idleSessionTimeout"] == "20"
    assert result["diff"]["after"]["idleSessionTimeout"] == "10"


def test_a_concurrent_create_falls_back_to_an_update():
    ssm = FakeSSM()
    ssm.exists_on_create = _doc({"s3BucketName": "theirs"})
    result = sp.run(FakeModule(ssm, idle_session_timeout=10))
    assert result["changed"] is True
    assert ssm.mutations() == ["CreateDocument", "UpdateDocument", "UpdateDocumentDefaultVersion 2"]
    assert ssm.content(NAME)["inputs"] == defaults(s3BucketName="theirs", idleSessionTimeout="10")


def test_a_concurrent_create_of_the_same_inputs_needs_no_update():
    ssm = FakeSSM()
    ssm.exists_on_create = _doc({"idleSessionTimeout": "10"})
    result = sp.run(FakeModule(ssm, idle_session_timeout=10))
    assert ssm.mutations() == ["CreateDocument"]
    assert result["changed"] is False
    assert result["document"]["inputs"] == defaults(idleSessionTimeout="10")


def test_duplicate_content_makes_the_version_that_has_it_the_default():
    wanted = sp.render_content(defaults(), "made elsewhere")
    others = [_doc({"runAsEnabled": True, "runAsDefaultUser": "ops"}), _doc({"s3BucketName": "x"})]
    ssm = FakeSSM({NAME: [wanted, *others]})
    ssm.docs[NAME]["default"] = "2"
    result = sp.run(FakeModule(ssm, state="absent"))
    assert result["changed"] is True
    assert ssm.mutations() == ["UpdateDocument", "UpdateDocumentDefaultVersion 1"]
    assert result["document"]["default_version"] == "1" and result["document"]["latest_version"] == "3"
    assert result["document"]["inputs"] == defaults()


def test_too_many_versions_says_how_to_make_room():
    ssm = FakeSSM({NAME: [_doc({})]})
    ssm.version_limit = 1
    with pytest.raises(sp.AnsibleSSMError, match="has as many versions as AWS allows") as raised:
        sp.run(FakeModule(ssm, idle_session_timeout=10))
    assert f"aws ssm delete-document --name {NAME} --document-version" in raised.value.message


def test_absent_restores_the_defaults_and_then_changes_nothing():
    ssm = FakeSSM({NAME: [_doc({"runAsEnabled": True, "runAsDefaultUser": "ops", "idleSessionTimeout": "5"})]})
    result = sp.run(FakeModule(ssm, state="absent"))
    assert result["changed"] is True and ssm.content(NAME)["inputs"] == defaults()
    ssm.calls.clear()
    assert sp.run(FakeModule(ssm, state="absent"))["changed"] is False
    assert ssm.mutations() == []


def test_absent_creates_no_document():
    ssm = FakeSSM()
    result = sp.run(FakeModule(ssm, state="absent"))
    assert result == {"changed": False, "document": {}, "diff": {"before": {}, "after": {}}}
    assert ssm.docs == {}


def test_a_document_of_another_type_is_an_error():
    ssm = FakeSSM({NAME: [_doc({})]}, document_type="Command")
    with pytest.raises(sp.AnsibleSSMError, match="is a Command document, not a Session document"):
        sp.run(FakeModule(ssm, idle_session_timeout=10))
    assert ssm.mutations() == []


@pytest.mark.parametrize("check_mode", [True, False])
def test_prune_versions_after_an_update(check_mode):
    ssm = FakeSSM({NAME: [_doc({"idleSessionTimeout": str(i)}) for i in range(1, 5)]})
    result = sp.run(FakeModule(ssm, check_mode=check_mode, idle_session_timeout=30, prune_versions=2))
    assert result["changed"] is True
    assert result["pruned_versions"] == ["1", "2", "3"]
    assert result["document"]["default_version"] == "5"
    if check_mode:
        assert ssm.mutations() == [] and sorted(ssm.docs[NAME]["versions"]) == ["1", "2", "3", "4"]
    else:
        assert ssm.calls.index("ListDocumentVersions") < ssm.calls.index("UpdateDocument")  # before any change
        assert ssm.mutations() == ["UpdateDocument", "UpdateDocumentDefaultVersion 5",
                                   "DeleteDocument 1", "DeleteDocument 2", "DeleteDocument 3"]
        assert sorted(ssm.docs[NAME]["versions"]) == ["4", "5"]


def test_prune_versions_alone_is_a_change_and_keeps_the_default():
    ssm = FakeSSM({NAME: [_doc({"idleSessionTimeout": str(i)}) for i in range(1, 5)]})
    ssm.docs[NAME]["default"] = "1"
    result = sp.run(FakeModule(ssm, idle_session_timeout=1, prune_versions=2))
    assert result["changed"] is True and result["pruned_versions"] == ["2", "3"]
    assert sorted(ssm.docs[NAME]["versions"]) == ["1", "4"]
    ssm.calls.clear()
    result = sp.run(FakeModule(ssm, idle_session_timeout=1, prune_versions=2))
    assert result["changed"] is False and result["pruned_versions"] == [] and ssm.mutations() == []


def test_no_pruned_versions_key_without_prune_versions():
    ssm = FakeSSM({NAME: [_doc({})]})
    assert "pruned_versions" not in sp.run(FakeModule(ssm))


def test_run_as_without_a_default_user_warns(monkeypatch):
    warned = []
    monkeypatch.setattr(sp, "warn", warned.append)  # module_utils/_task_warnings.warn, as the module calls it
    module = FakeModule(FakeSSM(), run_as_enabled=True)
    sp.run(module)
    assert len(warned) == 1 and "SSMSessionRunAs" in warned[0]


def _key(state="Enabled", spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT"):
    return {"KeyId": KEY_ID, "KeyState": state, "KeySpec": spec, "KeyUsage": usage}


@pytest.mark.parametrize(
    "key, message",
    [
        (None, "kms_key_id: alias/nope does not exist in us-east-1; create the key or fix the alias."),
        (_key(state="Disabled"), "kms_key_id: alias/nope (" + KEY_ID + ") is Disabled in us-east-1"),
        (_key(state="PendingDeletion"), "is PendingDeletion in us-east-1"),
        (_key(spec="RSA_2048"), "Session Manager needs a symmetric encryption key"),
        (_key(usage="GENERATE_VERIFY_MAC", spec="HMAC_256"), "is a HMAC_256 key for GENERATE_VERIFY_MAC"),
    ],
)
def test_a_bad_kms_key_fails_before_anything_is_read_or_written(key, message):
    ssm = FakeSSM()
    kms = FakeKMS({"alias/nope": key} if key else {})
    with pytest.raises(sp.AnsibleSSMError) as raised:
        sp.run(FakeModule(ssm, kms=kms, kms_key_id="alias/nope"))
    assert message in raised.value.message
    assert ssm.calls == []


def test_a_good_kms_key_is_written_as_given():
    ssm = FakeSSM()
    sp.run(FakeModule(ssm, kms=FakeKMS({"alias/ok": _key()}), kms_key_id="alias/ok"))
    assert ssm.content(NAME)["inputs"]["kmsKeyId"] == "alias/ok"


def test_version_with_content_skips_deleted_versions():
    wanted = _doc({"a": 1})
    ssm = FakeSSM({NAME: [_doc({"b": 1}), wanted, _doc({"c": 1}), _doc({"d": 1})]})
    del ssm.docs[NAME]["versions"]["3"]
    assert sp.version_with_content(ssm, NAME, "4", wanted) == "2"
    assert sp.version_with_content(ssm, NAME, "4", _doc({"nowhere": 1})) is None


@pytest.mark.parametrize("option, name, expected", [
    ("s3_bucket_name", "transcripts", "s3_bucket_name: the bucket transcripts does not exist, and every session "
     "would fail while the preferences name it; create it first (bastionless.ssm.session_logging does), fix the "
     'name, or set s3_bucket_name to "" to turn that logging off. Nothing was changed.'),
    ("cloudwatch_log_group_name", "/ssm/sessions", "cloudwatch_log_group_name: the log group /ssm/sessions does not "
     "exist in eu-west-1, and every session would fail while the preferences name it; create it first "
     '(bastionless.ssm.session_logging does), fix the name, or set cloudwatch_log_group_name to "" to turn that '
     "logging off. Nothing was changed."),
])
def test_a_missing_transcripts_destination_is_named(option, name, expected):
    assert sp.missing_destination(option, name, "eu-west-1") == expected
