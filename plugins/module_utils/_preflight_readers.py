# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The readers of bastionless.ssm.ssm_preflight: what it asks AWS (EC2, SSM, IAM, S3, STS) and the controller,
gathered into the shapes the pure checks of _preflight.py judge.

One helper per API call, each with its retries and its error mapping (a PreflightError); above them, the readers
batch those calls (ids in chunks, each VPC, instance profile, role and policy read once however many nodes use it)
and turn a denied or failed read into an ``error`` the checks report as "not checked" instead of failing.
"""

from typing import Any
from typing import Dict
from typing import List
from typing import Optional

try:
    import botocore
except ImportError:
    pass  # Handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list

from ansible_collections.bastionless.ssm.plugins.module_utils import _plugin_path
from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight as pf

ID_CHUNK = 100  # instance ids per DescribeInstances filter
INFO_CHUNK = 50  # ids per DescribeInstanceInformation filter
VPC_CHUNK = 100  # VPC ids per Describe* filter
SIM_CHUNK = 50  # resource ARNs per SimulatePrincipalPolicy call


class PreflightError(AnsibleAWSError):
    pass


class PreflightErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = PreflightError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code("NoSuchEntity")


def chunks(items: List[str], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def error_text(error: Exception) -> str:
    """'Code: message' of an AWS error (the botocore exception behind an AnsibleAWSError included)."""
    inner = getattr(error, "exception", None) or error
    response = getattr(inner, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return f"{type(inner).__name__}: {inner}"


def error_code(error: Exception) -> Optional[str]:
    inner = getattr(error, "exception", None) or error
    response = getattr(inner, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


# --- AWS calls (one API each, with retries) --------------------------------------------------------------


@PreflightErrorHandler.common_error_handler("describe instances")
@AWSRetry.jittered_backoff()
def describe_instances(ec2, filters: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters).build_full_result()
    return [instance for reservation in pages["Reservations"] for instance in reservation["Instances"]]


@PreflightErrorHandler.common_error_handler("describe instance information")
@AWSRetry.jittered_backoff()
def describe_instance_information(ssm, ids: List[str]) -> List[Dict[str, Any]]:
    paginator = ssm.get_paginator("describe_instance_information")
    pages = paginator.paginate(Filters=[{"Key": "InstanceIds", "Values": ids}], PaginationConfig={"PageSize": 50})
    return pages.build_full_result()["InstanceInformationList"]


@PreflightErrorHandler.common_error_handler("describe a VPC's resources")
@AWSRetry.jittered_backoff()
def describe_paged(ec2, method: str, key: str, filters: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    # DescribeNatGateways names its filter parameter Filter, the others Filters.
    argument = "Filter" if method == "describe_nat_gateways" else "Filters"
    return ec2.get_paginator(method).paginate(**{argument: filters}).build_full_result()[key]


@PreflightErrorHandler.common_error_handler("describe a VPC attribute")
@AWSRetry.jittered_backoff()
def describe_vpc_attribute(ec2, vpc_id: str, attribute: str) -> bool:
    answer = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=attribute)
    key = attribute[0].upper() + attribute[1:]
    return bool((answer.get(key) or {}).get("Value"))


@PreflightErrorHandler.list_error_handler("get instance profile")
@AWSRetry.jittered_backoff()
def get_instance_profile(iam, name: str) -> Optional[Dict[str, Any]]:
    return iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]


@PreflightErrorHandler.list_error_handler("get role")
@AWSRetry.jittered_backoff()
def get_role(iam, name: str) -> Optional[Dict[str, Any]]:
    return iam.get_role(RoleName=name)["Role"]


@PreflightErrorHandler.common_error_handler("list role policies")
@AWSRetry.jittered_backoff()
def list_role_policies(iam, name: str) -> List[str]:
    return iam.get_paginator("list_role_policies").paginate(RoleName=name).build_full_result()["PolicyNames"]


@PreflightErrorHandler.common_error_handler("get role policy")
@AWSRetry.jittered_backoff()
def get_role_policy(iam, role: str, policy: str) -> Any:
    return iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]


@PreflightErrorHandler.common_error_handler("list attached role policies")
@AWSRetry.jittered_backoff()
def list_attached_role_policies(iam, name: str) -> List[str]:
    pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=name).build_full_result()
    return [p["PolicyArn"] for p in pages["AttachedPolicies"]]


@PreflightErrorHandler.common_error_handler("get managed policy")
@AWSRetry.jittered_backoff()
def get_policy_document(iam, arn: str) -> Any:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]


@PreflightErrorHandler.common_error_handler("get service setting")
@AWSRetry.jittered_backoff()
def get_service_setting(ssm, setting_id: str) -> Dict[str, Any]:
    return ssm.get_service_setting(SettingId=setting_id)["ServiceSetting"]


@PreflightErrorHandler.common_error_handler("list managed node tags")
@AWSRetry.jittered_backoff()
def list_managed_node_tags(ssm, node_id: str) -> Dict[str, str]:
    return pf.tags_dict(ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=node_id)["TagList"])


@PreflightErrorHandler.common_error_handler("get caller identity")
@AWSRetry.jittered_backoff()
def get_caller_identity(sts) -> Dict[str, Any]:
    return sts.get_caller_identity()


@PreflightErrorHandler.common_error_handler("simulate principal policy")
@AWSRetry.jittered_backoff()
def simulate_principal_policy(iam, principal_arn: str, resources: List[str],
                              context: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    kwargs = {"PolicySourceArn": principal_arn, "ActionNames": ["ssm:StartSession"], "ResourceArns": resources}
    if context:
        kwargs["ContextEntries"] = context
    pages = iam.get_paginator("simulate_principal_policy").paginate(**kwargs).build_full_result()
    return pages["EvaluationResults"]


@AWSRetry.jittered_backoff(catch_extra_error_codes=["SlowDown"])
def head_bucket(s3, bucket: str) -> Dict[str, Any]:
    return s3.head_bucket(Bucket=bucket)


# --- reading what the checks need ----------------------------------------------------------------------


def select_instances(ec2, ids: List[str], filters: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The EC2 instances to check: the listed ones (any state) and/or those the filters match (not terminated)."""
    found: Dict[str, Dict[str, Any]] = {}
    boto_filters = ansible_dict_to_boto3_filter_list(filters) if filters else []
    if ids:
        for chunk in chunks(sorted(set(ids)), ID_CHUNK):
            for instance in describe_instances(ec2, boto_filters + [{"Name": "instance-id", "Values": chunk}]):
                found[instance["InstanceId"]] = instance
    elif filters:
        for instance in describe_instances(ec2, boto_filters):
            if (instance.get("State") or {}).get("Name") not in ("terminated", "shutting-down"):
                found[instance["InstanceId"]] = instance
    return [found[i] for i in sorted(found)]


def read_instance_information(ssm, node_ids: List[str]) -> Dict[str, Dict[str, Any]]:
    rows: Dict[str, Dict[str, Any]] = {}
    for chunk in chunks(sorted(set(node_ids)), INFO_CHUNK):
        for row in describe_instance_information(ssm, chunk):
            rows[row["InstanceId"]] = row
    return rows


def read_vpcs(ec2, vpc_ids: List[str]) -> Dict[str, Dict[str, Any]]:
    """{vpc id: facts for _preflight.network_findings, or {"id", "error"} when they could not be read}."""
    vpcs: Dict[str, Dict[str, Any]] = {v: {"id": v, "route_tables": [], "nat_gateways": [], "internet_gateways": [],
                                           "endpoints": [], "subnets": {}, "security_groups": {}} for v in vpc_ids}
    try:
        for chunk in chunks(sorted(vpc_ids), VPC_CHUNK):
            by_vpc = [{"Name": "vpc-id", "Values": chunk}]
            for table in describe_paged(ec2, "describe_route_tables", "RouteTables", by_vpc):
                vpcs[table["VpcId"]]["route_tables"].append(table)
            for nat in describe_paged(ec2, "describe_nat_gateways", "NatGateways", by_vpc):
                if nat.get("VpcId") in vpcs:
                    vpcs[nat["VpcId"]]["nat_gateways"].append(nat)
            for igw in describe_paged(ec2, "describe_internet_gateways", "InternetGateways",
                                      [{"Name": "attachment.vpc-id", "Values": chunk}]):
                for attachment in igw.get("Attachments") or []:
                    if attachment.get("VpcId") in vpcs:
                        vpcs[attachment["VpcId"]]["internet_gateways"].append(igw)
            for endpoint in describe_paged(ec2, "describe_vpc_endpoints", "VpcEndpoints", by_vpc):
                if endpoint.get("VpcId") in vpcs:
                    vpcs[endpoint["VpcId"]]["endpoints"].append(endpoint)
            for subnet in describe_paged(ec2, "describe_subnets", "Subnets", by_vpc):
                vpcs[subnet["VpcId"]]["subnets"][subnet["SubnetId"]] = subnet
            for group in describe_paged(ec2, "describe_security_groups", "SecurityGroups", by_vpc):
                vpc = vpcs.get(group.get("VpcId"))
                if vpc is not None:
                    vpc["security_groups"][group["GroupId"]] = group
                    if group.get("GroupName") == "default":
                        vpc["default_group_id"] = group["GroupId"]
        for vpc_id, vpc in vpcs.items():
            vpc["dns_support"] = describe_vpc_attribute(ec2, vpc_id, "enableDnsSupport")
            vpc["dns_hostnames"] = describe_vpc_attribute(ec2, vpc_id, "enableDnsHostnames")
    except PreflightError as e:
        return {v: {"id": v, "error": error_text(e)} for v in vpc_ids}
    return vpcs


class IamReader:
    """Instance profiles, roles and policies, each read once however many nodes use it."""

    def __init__(self, iam):
        self.iam = iam
        self._profiles: Dict[str, Dict[str, Any]] = {}
        self._roles: Dict[str, Optional[Dict[str, Any]]] = {}
        self._policies: Dict[str, Any] = {}

    def policy(self, arn: str) -> Any:
        if arn not in self._policies:
            if pf.known_core_policy(arn):
                self._policies[arn] = {"Statement": [{"Effect": "Allow", "Action": list(pf.CORE_ACTIONS),
                                                      "Resource": "*"}]}
            else:
                self._policies[arn] = get_policy_document(self.iam, arn)
        return self._policies[arn]

    def role(self, name: str) -> Optional[Dict[str, Any]]:
        """{name, arn, trust, documents, boundary, boundary_arn} or {name, error}; None when it does not exist."""
        if name not in self._roles:
            try:
                role = get_role(self.iam, name)
                if role is None:
                    self._roles[name] = None
                else:
                    documents = [get_role_policy(self.iam, name, p) for p in list_role_policies(self.iam, name)]
                    documents += [self.policy(arn) for arn in list_attached_role_policies(self.iam, name)]
                    boundary_arn = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
                    self._roles[name] = {
                        "name": role["RoleName"], "arn": role["Arn"], "trust": role.get("AssumeRolePolicyDocument"),
                        "documents": documents, "boundary_arn": boundary_arn,
                        "boundary": self.policy(boundary_arn) if boundary_arn else None,
                    }
            except PreflightError as e:
                self._roles[name] = {"name": name, "error": error_text(e)}
        return self._roles[name]

    def profile(self, reference: Dict[str, Any]) -> Dict[str, Any]:
        """What _preflight.iam_findings needs about the instance's IamInstanceProfile ({Arn, Id})."""
        arn = reference.get("Arn")
        if arn not in self._profiles:
            try:
                found = get_instance_profile(self.iam, pf.name_from_arn(arn))
            except PreflightError as e:
                self._profiles[arn] = {"arn": arn, "error": error_text(e)}
            else:
                if found is None or found.get("Arn") != arn:
                    self._profiles[arn] = {"arn": arn, "found": False}
                else:
                    roles = found.get("Roles") or []
                    self._profiles[arn] = {"arn": arn, "found": True, "id": found.get("InstanceProfileId"),
                                           "role": self.role(roles[0]["RoleName"]) if roles else None}
        profile = dict(self._profiles[arn])
        # EC2 keeps the profile's id (AIPA...): a profile deleted and re-created under the same name is another one.
        attached_id = reference.get("Id") or ""
        if profile.get("found") and attached_id.startswith("AIPA") and attached_id != profile.get("id"):
            profile["found"] = False
        return profile


def read_dhmc(ssm, iam_reader: IamReader) -> Dict[str, Any]:
    try:
        value = get_service_setting(ssm, pf.DHMC_SETTING).get("SettingValue")
    except PreflightError as e:
        return {"error": error_text(e)}
    if value in (None, "", "$None"):
        return {"enabled": False, "value": value}
    role = iam_reader.role(value.rsplit("/", 1)[-1])
    if role is not None and role.get("error"):
        return {"error": role["error"]}
    return {"enabled": True, "value": value, "role": role}


def find_plugin(module, configured: Optional[str]) -> Dict[str, Any]:
    """Where session-manager-plugin is (_plugin_path.find, the collection's one lookup), and its version."""
    found, looked = _plugin_path.find(configured)
    result = {"found": bool(found), "path": found, "looked": looked, "version": None}
    if found:
        rc, out, err = module.run_command([found, "--version"])
        version = (out or "").strip().splitlines()[0].strip() if (out or "").strip() else ""
        if rc == 0 and version:
            result["version"] = version
        else:
            result["error"] = f"exit {rc}: {(err or out or '').strip()[:200]}"
    return result


def read_bucket(s3, bucket: str) -> Dict[str, Any]:
    try:
        answer = head_bucket(s3, bucket)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        code = error_code(e)
        headers = (getattr(e, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if code in ("404", "NoSuchBucket", "NotFound"):
            return {"name": bucket, "exists": False, "region": None}
        if code in ("301", "PermanentRedirect") and headers.get("x-amz-bucket-region"):
            return {"name": bucket, "exists": True, "region": headers["x-amz-bucket-region"]}
        return {"name": bucket, "exists": None, "region": headers.get("x-amz-bucket-region"), "error": error_text(e)}
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return {"name": bucket, "exists": True, "region": answer.get("BucketRegion") or headers.get("x-amz-bucket-region")}


def simulate_nodes(iam, principal: str, targets: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """ssm:StartSession decisions per node, in few calls: one pass over every node without context tells (in
    MissingContextValues) which tag keys the policies look at; nodes are then simulated again, grouped by their
    values of just those keys."""
    arns = {node_id: target["arn"] for node_id, target in targets.items()}
    found: Dict[str, Dict[str, Any]] = {}
    for chunk in chunks(sorted(arns), SIM_CHUNK):
        found.update(pf.decisions(simulate_principal_policy(iam, principal, [arns[n] for n in chunk], [])))
    result = {node_id: found.get(arns[node_id]) or found.get("*") for node_id in arns}
    keys = pf.tag_keys_of(k for d in result.values() if d for k in d["missing_context"])
    groups: Dict[Any, List[str]] = {}
    for node_id, target in targets.items():
        relevant = tuple(sorted((k, v) for k, v in target["tags"].items() if k.lower() in keys))
        if relevant:
            groups.setdefault(relevant, []).append(node_id)
    for relevant, node_ids in sorted(groups.items()):
        context = pf.context_entries(dict(relevant))
        for chunk in chunks(node_ids, SIM_CHUNK):
            found = pf.decisions(simulate_principal_policy(iam, principal, [arns[n] for n in chunk], context))
            for node_id in chunk:
                result[node_id] = found.get(arns[node_id]) or found.get("*")
    return result


def simulate_caller(iam, caller_arn: str, partition: str, region: str, account: str, document: str,
                    targets: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Simulate ssm:StartSession for the caller on each target ({node id: {arn, tags}}) and on the document.
    Returns {"status", "principal_arn", "reason", "document", "decisions": {node id: decision}}."""
    doc_arn = pf.document_arn(document, partition, region, account)
    result = {"status": "not_simulated", "principal_arn": None, "reason": None,
              "document": {"name": document, "arn": doc_arn, "decision": None}, "decisions": {}}
    kind, value = pf.simulation_principal(caller_arn)
    if kind is None:
        result["reason"] = value
        return result
    principal = value
    if kind == "role":
        try:
            role = get_role(iam, value)
        except PreflightError as e:
            result["reason"] = f"the caller's role {value} could not be read to simulate it ({error_text(e)})"
            return result
        if role is None:
            result["reason"] = f"the caller's role {value} does not exist in IAM"
            return result
        principal = role["Arn"]
    result["principal_arn"] = principal
    try:
        result["decisions"] = simulate_nodes(iam, principal, targets)
        found = pf.decisions(simulate_principal_policy(iam, principal, [doc_arn], []))
        result["document"]["decision"] = found.get(doc_arn) or found.get("*")
    except PreflightError as e:
        code = error_code(e)
        if code in ("AccessDenied", "AccessDeniedException"):
            reason = f"the caller may not iam:SimulatePrincipalPolicy on {principal} ({error_text(e)})"
        elif code == "NoSuchEntity":
            reason = f"IAM does not know the principal {principal} ({error_text(e)})"
        else:
            reason = f"SimulatePrincipalPolicy failed for {principal} ({error_text(e)})"
        return dict(result, reason=reason, decisions={}, document=dict(result["document"], decision=None))
    except Exception as e:  # pylint: disable=broad-except
        # An endpoint that does not implement the call at all (some AWS stand-ins) answers with something
        # botocore cannot parse; that is "could not simulate" too, not a failure of the preflight.
        first_line = (str(e).splitlines() or [""])[0][:160]
        reason = f"SimulatePrincipalPolicy is not available at this endpoint ({type(e).__name__}: {first_line})"
        return dict(result, reason=reason, decisions={}, document=dict(result["document"], decision=None))
    result["status"] = "simulated"
    return result
