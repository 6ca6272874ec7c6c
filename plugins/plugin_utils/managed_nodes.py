# -*- coding: utf-8 -*-

# Copyright: (c) 2025, bastionless.ssm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the bastionless.ssm.managed_nodes inventory does with AWS's answers, kept free of Ansible's inventory
objects so that it can be tested alone: which calls list a region's managed nodes, how the SSM and EC2 answers
are joined, how the EC2 filter syntax applies to hybrid nodes, host names, host variables and default groups.

Every function here runs in linear time in the number of nodes; nothing makes an API call per node.
"""

from __future__ import annotations

import datetime
import difflib
import re

from ansible_collections.bastionless.ssm.plugins.plugin_utils._target_diagnosis import EXPIRED_CODES
from ansible_collections.bastionless.ssm.plugins.plugin_utils._target_diagnosis import expired_fix
from ansible_collections.bastionless.ssm.plugins.plugin_utils._target_diagnosis import region_problem

# AWS's limits (the API references): DescribeInstanceInformation returns at most 50 nodes a call; an
# InstanceIds filter takes at most 100 values, so 50 ids fill exactly one page. DescribeInstances returns at
# most 1,000 instances a call; a filter takes at most 200 values. GetResources returns at most 100 resources.
SSM_PAGE = 50
EC2_PAGE = 1000
EC2_FILTER_VALUES = 200
TAGGING_PAGE = 100

PING_STATUSES = ("Online", "ConnectionLost", "Inactive")
RESOURCE_TYPES = ("EC2Instance", "ManagedInstance")
PLATFORM_TYPES = ("Linux", "Windows", "MacOS")
# EC2 states in which SSM may list an instance: only a running instance can be Online.
RUNNING_STATES = ["running"]
LISTED_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]

# Joining by listing EC2 (then asking SSM about those ids) pays off while most listed instances are managed
# nodes; below this share the region is treated as sparse (see RegionFetch).
DENSE_SHARE = 0.5
PROBE_IDS = 1000

SSM_FIELDS = (
    ("InstanceId", "instance_id"),
    ("PingStatus", "ping_status"),
    ("LastPingDateTime", "last_ping_date_time"),
    ("AgentVersion", "agent_version"),
    ("IsLatestVersion", "is_latest_version"),
    ("PlatformType", "platform_type"),
    ("PlatformName", "platform_name"),
    ("PlatformVersion", "platform_version"),
    ("ResourceType", "resource_type"),
    ("IPAddress", "ip_address"),
    ("ComputerName", "computer_name"),
    ("AssociationStatus", "association_status"),
    ("LastAssociationExecutionDate", "last_association_execution_date"),
    ("LastSuccessfulAssociationExecutionDate", "last_successful_association_execution_date"),
    ("ActivationId", "activation_id"),
    ("IamRole", "iam_role"),
    ("RegistrationDate", "registration_date"),
    ("Name", "node_name"),
)
EC2_FIELDS = (
    ("InstanceType", "instance_type"),
    ("ImageId", "image_id"),
    ("VpcId", "vpc_id"),
    ("SubnetId", "subnet_id"),
    ("PrivateIpAddress", "private_ip_address"),
    ("PrivateDnsName", "private_dns_name"),
    ("PublicIpAddress", "public_ip_address"),
    ("PublicDnsName", "public_dns_name"),
)

HOSTNAME_SOURCES = (
    "instance-id",
    "computer-name",
    "private-dns-name",
    "private-ip-address",
    "dns-name",
    "ip-address",
    "name",
)


class ManagedNodesError(Exception):
    """Bad configuration, or an AWS answer the inventory cannot use."""


# --- AWS answers, reduced to what the inventory keeps (and caches) ----------------------------------------


def _plain(value):
    """Timestamps as ISO 8601 text, so that a cached answer and a fresh one look the same."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def node_information(info):
    """A DescribeInstanceInformation entry as snake_case host variables."""
    return {snake: _plain(info[camel]) for camel, snake in SSM_FIELDS if info.get(camel) not in (None, "")}


def instance_facts(instance):
    """A DescribeInstances instance reduced to the facts the inventory keeps, as snake_case host variables."""
    facts = {snake: _plain(instance[camel]) for camel, snake in EC2_FIELDS if instance.get(camel) not in (None, "")}
    state = instance.get("State") or {}
    facts["state"] = {"name": state.get("Name"), "code": state.get("Code")}
    zone = (instance.get("Placement") or {}).get("AvailabilityZone")
    if zone:
        facts["placement"] = {"availability_zone": zone, "region": zone[:-1]}
    profile = instance.get("IamInstanceProfile")
    if profile:
        facts["iam_instance_profile"] = {"arn": profile.get("Arn"), "id": profile.get("Id")}
    return facts


# What DescribeInstances says about an instance that the inventory does not keep: the bulk of each instance's
# XML (block devices, network interfaces, options). Dropped before botocore parses the answer, which then
# takes half the time (a page of 1,000 instances is some 3 MB of XML).
_UNUSED_INSTANCE_XML = re.compile(
    rb"<(blockDeviceMapping|networkInterfaceSet|metadataOptions|hibernationOptions|enclaveOptions|"
    rb"capacityReservationSpecification|maintenanceOptions|privateDnsNameOptions|cpuOptions|licenseSet|"
    rb"elasticGpuAssociationSet|elasticInferenceAcceleratorAssociationSet|productCodes|stateReason|monitoring|"
    rb"networkPerformanceOptions|operator|clientToken|hypervisor|sriovNetSupport|virtualizationType|"
    rb"rootDeviceName|rootDeviceType|ebsOptimized|enaSupport|sourceDestCheck|amiLaunchIndex|bootMode|"
    rb"currentInstanceBootMode|usageOperation|usageOperationUpdateTime|platformDetails)(?:/>|>.*?</\1>)",
    re.S,
)


def drop_unused_instance_xml(response_dict, **kwargs):
    """botocore ``before-parse.ec2.DescribeInstances`` handler: drop the elements of a successful answer that
    the inventory does not read. The XML stays well formed: these elements never nest in one another."""
    body = response_dict.get("body")
    if response_dict.get("status_code") == 200 and isinstance(body, bytes):
        response_dict["body"] = _UNUSED_INSTANCE_XML.sub(b"", body)


def tag_dict(tags):
    return {tag["Key"]: tag.get("Value", "") for tag in tags or []}


# --- filters ------------------------------------------------------------------------------------------------


def wanted_ping_statuses(option):
    """None (every status) for ``all``, else the statuses asked for."""
    statuses = list(dict.fromkeys(option or ["Online"]))
    if "all" in statuses:
        return None
    unknown = [s for s in statuses if s not in PING_STATUSES]
    if unknown:
        raise ManagedNodesError(
            f"ping_status: unknown value(s) {', '.join(unknown)}; use {', '.join(PING_STATUSES)} or all"
        )
    return statuses


def ssm_filters(ping_statuses, platform_types, resource_type=None, instance_ids=None):
    """The Filters of a DescribeInstanceInformation call: what the service can decide itself."""
    filters = []
    if instance_ids is not None:
        filters.append({"Key": "InstanceIds", "Values": list(instance_ids)})
    if resource_type:
        filters.append({"Key": "ResourceType", "Values": [resource_type]})
    if ping_statuses:
        filters.append({"Key": "PingStatus", "Values": list(ping_statuses)})
    if platform_types:
        filters.append({"Key": "PlatformTypes", "Values": list(platform_types)})
    return filters


def _filter_values(value):
    if isinstance(value, (list, tuple)):
        return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]
    if isinstance(value, bool):
        return [str(value).lower()]
    return [str(value)]


def ec2_filter_list(filter_dict, ping_statuses, states=True):
    """An EC2 filter dict (``{"tag:Env": "prod"}``) as DescribeInstances Filters, with an instance state filter
    unless the dict has one (or ``states`` is false): running when only Online nodes are wanted (nothing else
    can be Online), else any state but terminated."""
    filters = [{"Name": str(name), "Values": _filter_values(value)} for name, value in (filter_dict or {}).items()]
    if states and not any(f["Name"] in ("instance-state-name", "instance-state-code") for f in filters):
        states = RUNNING_STATES if ping_statuses == ["Online"] else LISTED_STATES
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    return filters


def include_filter_dicts(filters, include_filters):
    """``filters`` and ``include_filters`` as amazon.aws.aws_ec2 reads them: a node is kept when it matches
    ``filters`` or any entry of ``include_filters``; with neither, every node is kept."""
    result = ([filters] if filters else []) + list(include_filters or [])
    return result or [{}]


_WILDCARD_CACHE = {}


def _value_matches(actual, patterns):
    """EC2 filter values: ``*`` and ``?`` are wildcards, matching is case sensitive."""
    if actual is None:
        return False
    actual = str(actual)
    for pattern in patterns:
        if "*" not in pattern and "?" not in pattern:
            if actual == pattern:
                return True
            continue
        regex = _WILDCARD_CACHE.get(pattern)
        if regex is None:
            body = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
            regex = _WILDCARD_CACHE[pattern] = re.compile(f"^{body}$", re.S)
        if regex.match(actual):
            return True
    return False


# Keys of the EC2 filter syntax that mean something for a hybrid (mi-) node, and what they read.
HYBRID_FILTER_KEYS = {
    "instance-id": lambda node: node["ssm"].get("instance_id"),
    "private-ip-address": lambda node: node["ssm"].get("ip_address"),
    "network-interface.addresses.private-ip-address": lambda node: node["ssm"].get("ip_address"),
    "platform": lambda node: "windows" if node["ssm"].get("platform_type") == "Windows" else None,
}
# Instance state keys do not apply to hybrid nodes (ping_status says whether they are up); they are skipped.
STATE_FILTER_KEYS = ("instance-state-name", "instance-state-code")


def hybrid_matches(node, filter_dict):
    """Whether a hybrid node matches an EC2 filter dict: tags (its SSM tags), instance-id, private IP,
    platform; a key that hybrid nodes do not have does not match, as in EC2."""
    tags = node.get("tags") or {}
    for name, value in (filter_dict or {}).items():
        patterns = _filter_values(value)
        if name in STATE_FILTER_KEYS:
            continue
        if name.startswith("tag:"):
            if not _value_matches(tags.get(name[4:]), patterns):
                return False
        elif name == "tag-key":
            if not any(_value_matches(key, patterns) for key in tags):
                return False
        elif name == "tag-value":
            if not any(_value_matches(v, patterns) for v in tags.values()):
                return False
        elif name in HYBRID_FILTER_KEYS:
            if not _value_matches(HYBRID_FILTER_KEYS[name](node), patterns):
                return False
        else:
            return False
    return True


def hybrid_selected(node, include, exclude):
    return any(hybrid_matches(node, f) for f in include) and not any(hybrid_matches(node, f) for f in exclude)


def chunks(items, size):
    items = list(items)
    return [items[start:start + size] for start in range(0, len(items), size)]


# --- fetching one region ------------------------------------------------------------------------------------


class RegionFetch:
    """List one region's managed nodes with page-sized calls and join SSM with EC2 by instance id.

    ``call(service, operation, **kwargs)`` makes one API call and returns its answer; ``submit(fn, *args)``
    runs ``fn`` on the region's thread pool and returns a future. Both come from the plugin; here they are
    plain callables, so that the plan can be tested with a fake AWS.

    The plan:

    - hybrid nodes: DescribeInstanceInformation with ResourceType=ManagedInstance, 50 a page (pages follow one
      another), then their SSM tags with GetResources (``ssm:managed-instance``, 100 a page) when there are any;
    - EC2 instances ("dense" plan): DescribeInstances with the EC2 filters, 1,000 a page; for every page,
      DescribeInstanceInformation by InstanceIds, 50 ids a call, in parallel while the next page is fetched.
      The EC2 answer is the join: no call per node, and the calls to SSM run side by side, where a listing
      of SSM alone would be one page of 50 after another (10,000 nodes: 200 calls in a row);
    - if, after the first 1,000 ids, fewer than half the listed instances turn out to be managed nodes, the
      region is "sparse": the EC2 listing stops, SSM lists its EC2 instances (50 a page) and DescribeInstances
      fetches the ones not seen yet by instance-id filter, 200 ids a call. Listing EC2 costs a call per 1,000
      instances, fetching by id a call per 200 managed nodes: listing is the cheaper join while more than one
      instance in five is managed, and the dense plan also saves the SSM listing's sequential pages;
    - ``exclude_filters``: one DescribeInstances listing each, in parallel, for the ids to leave out.
    """

    def __init__(self, region, call, submit, ping_statuses, platform_types, resource_types, include, exclude):
        self.region = region
        self.call = call
        self.submit = submit
        self.ping_statuses = ping_statuses
        self.platform_types = platform_types
        self.resource_types = resource_types
        self.include = include
        self.exclude = exclude
        self.plan = None  # "dense" or "sparse" once decided (for tests and the debug log)

    def _ec2_node(self, info, instance):
        return {"region": self.region, "ssm": node_information(info), "tags": tag_dict(instance.get("Tags")),
                "ec2": instance_facts(instance)}

    # --- calls --------------------------------------------------------------------------------------------
    def _ssm_pages(self, filters):
        found = []
        token = None
        while True:
            kwargs = {"Filters": filters, "MaxResults": SSM_PAGE}
            if token:
                kwargs["NextToken"] = token
            answer = self.call("ssm", "describe_instance_information", **kwargs)
            found.extend(answer.get("InstanceInformationList") or [])
            token = answer.get("NextToken")
            if not token:
                return found

    def _ssm_by_ids(self, ids):
        return self._ssm_pages(ssm_filters(self.ping_statuses, self.platform_types, instance_ids=ids))

    def _ec2_pages(self, filters):
        token = None
        while True:
            kwargs = {"Filters": filters, "MaxResults": EC2_PAGE}
            if token:
                kwargs["NextToken"] = token
            answer = self.call("ec2", "describe_instances", **kwargs)
            yield [i for reservation in answer.get("Reservations") or [] for i in reservation.get("Instances") or []]
            token = answer.get("NextToken")
            if not token:
                return

    def _ec2_listing(self, filters):
        return [i for page in self._ec2_pages(filters) for i in page]

    def _managed_instance_tags(self):
        tags = {}
        token = None
        while True:
            kwargs = {"ResourceTypeFilters": ["ssm:managed-instance"], "ResourcesPerPage": TAGGING_PAGE}
            if token:
                kwargs["PaginationToken"] = token
            answer = self.call("resourcegroupstaggingapi", "get_resources", **kwargs)
            for item in answer.get("ResourceTagMappingList") or []:
                tags[item["ResourceARN"].rsplit("/", 1)[-1]] = tag_dict(item.get("Tags"))
            token = answer.get("PaginationToken")
            if not token:
                return tags

    # --- the plan -----------------------------------------------------------------------------------------
    def hybrid_nodes(self):
        infos = self._ssm_pages(ssm_filters(self.ping_statuses, self.platform_types, resource_type="ManagedInstance"))
        if not infos:
            return []
        tags = self._managed_instance_tags()
        nodes = []
        for info in infos:
            node = {"region": self.region, "ssm": node_information(info), "tags": tags.get(info["InstanceId"], {}),
                    "ec2": None}
            if hybrid_selected(node, self.include, self.exclude):
                nodes.append(node)
        return nodes

    def ec2_nodes(self):
        include_lists = [ec2_filter_list(f, self.ping_statuses) for f in self.include]
        excluded_futures = [self.submit(self._ec2_listing, ec2_filter_list(f, None, states=False))
                            for f in self.exclude]
        instances = {}  # id -> DescribeInstances entry: every instance the EC2 filters select (so far)
        asked = set()  # ids sent to SSM
        batches = []  # futures of DescribeInstanceInformation by InstanceIds
        self.plan = "dense"
        probed = False
        for filters in include_lists:
            for page in self._ec2_pages(filters):
                fresh = []
                for instance in page:
                    if instance["InstanceId"] not in instances:
                        instances[instance["InstanceId"]] = instance
                        fresh.append(instance["InstanceId"])
                ids = [i for i in fresh if i not in asked]
                asked.update(ids)
                batches.extend(self.submit(self._ssm_by_ids, batch) for batch in chunks(ids, SSM_PAGE))
                if not probed and len(asked) >= PROBE_IDS:
                    probed = True
                    managed = sum(len(future.result()) for future in batches)
                    if managed < DENSE_SHARE * len(asked):
                        self.plan = "sparse"
                        break
            if self.plan == "sparse":
                break
        infos = {}
        for future in batches:
            for info in future.result():
                infos[info["InstanceId"]] = info
        if self.plan == "sparse":
            listed = self._ssm_pages(ssm_filters(self.ping_statuses, self.platform_types, resource_type="EC2Instance"))
            for info in listed:
                infos[info["InstanceId"]] = info
            unseen = [i for i in infos if i not in instances]
            lookups = [self.submit(self._ec2_listing, filters + [{"Name": "instance-id", "Values": batch}])
                       for filters in include_lists for batch in chunks(unseen, EC2_FILTER_VALUES)]
            for future in lookups:
                for instance in future.result():
                    instances.setdefault(instance["InstanceId"], instance)
        excluded = {i["InstanceId"] for future in excluded_futures for i in future.result()}
        nodes = []
        for instance_id, instance in instances.items():
            info = infos.get(instance_id)
            if info is None or instance_id in excluded:
                continue
            nodes.append(self._ec2_node(info, instance))
        return nodes

    def run(self):
        hybrids = self.submit(self.hybrid_nodes) if "ManagedInstance" in self.resource_types else None
        nodes = self.ec2_nodes() if "EC2Instance" in self.resource_types else []
        if hybrids is not None:
            nodes.extend(hybrids.result())
        return nodes


# --- host names ---------------------------------------------------------------------------------------------


# What to do when the inventory cannot reach AWS at all, by botocore's exception class name.
AWS_UNREACHABLE_FIXES = {
    "NoCredentialsError": (
        "no AWS credentials were found: give the inventory a profile (its profile option, or AWS_PROFILE) or "
        "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); for the offline lab of the collection's "
        "repository, export the lab's variables in this shell first: eval \"$(ssm-lab up --nodes 3)\", or "
        "eval \"$(ssm-lab env)\" when it is already running"),
    "EndpointConnectionError": (
        "the AWS endpoint does not answer: check endpoint_url (AWS_ENDPOINT_URL) and the network; for the "
        "offline lab, check that it still runs (ssm-lab status) and that this shell has its variables "
        "(eval \"$(ssm-lab env)\")"),
}


# ... and by the error code AWS answered with.
AWS_REFUSED_FIXES = {code: expired_fix("the inventory's credentials") for code in EXPIRED_CODES}


def given_endpoint(endpoint_url, environ) -> str:
    """The endpoint the inventory's SSM calls go to instead of AWS's, "" for AWS's own: the endpoint_url option, else
    botocore's AWS_ENDPOINT_URL_SSM or AWS_ENDPOINT_URL (the offline lab's)."""
    return endpoint_url or environ.get("AWS_ENDPOINT_URL_SSM") or environ.get("AWS_ENDPOINT_URL") or ""


def region_refusal(region, known, botocore_version: str, endpoint: str):
    """Why the inventory refuses ``region`` before any AWS call, or None. Without an endpoint, a region the installed
    botocore does not know is refused, with the nearest names: a typo, or a region newer than that botocore. With one
    (a lab's or a custom endpoint), the endpoint decides which regions there are; nothing is refused here, and a
    region whose listing fails is named then (unknown_region_note)."""
    if endpoint:
        return None
    return region_problem(
        str(region), known, known_by=f"botocore {botocore_version}",
        fix=(f"fix the regions key of the inventory file; if {region} is a region newer than this botocore, upgrade it "
             "(python3 -m pip install --upgrade botocore boto3), or set endpoint_url to an endpoint that serves it"))


def unknown_region_note(region, known, botocore_version: str) -> str:
    """What a failure to list ``region`` through an endpoint adds when botocore does not know the region: "" when it
    does."""
    problem = region_problem(str(region), known, known_by=f"botocore {botocore_version}",
                             fix="check the regions key of the inventory file")
    return f"; {problem}" if problem else ""


def unreachable_fix(error):
    """The fix for an exception that kept the inventory from reaching AWS at all, or None."""
    code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code", "")
    if code in AWS_REFUSED_FIXES:
        return AWS_REFUSED_FIXES[code]
    for cls in type(error).__mro__:
        if cls.__name__ in AWS_UNREACHABLE_FIXES:
            return AWS_UNREACHABLE_FIXES[cls.__name__]
    return None


# What ansible-core does with an inventory source no plugin could parse, unless [inventory] any_unparsed_is_failed is
# on: it warns and goes on without it, so an ad-hoc command or a play on the fleet runs on no host and exits 0.
UNPARSED_IS_IGNORED = (
    " (ansible-core goes on without this inventory source and may exit 0 having run on no host: set "
    "any_unparsed_is_failed = True in the [inventory] section of your ansible.cfg, or export "
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=True, to make it fail the command)"
)


def unparsed_note(unparsed_is_failed):
    """What the inventory's error ends with: nothing when ansible-core's ``any_unparsed_is_failed`` makes an
    unparsed source fail the command, else the setting that does, since the command would go on without the fleet."""
    return "" if unparsed_is_failed else UNPARSED_IS_IGNORED


def unknown_keys_problem(config, definitions):
    """None when every key of an inventory file is an option of the plugin (or an alias of one); else the message that
    names each unknown key, the option it is closest to, and the valid keys. ``definitions``: the plugin's option
    definitions by name, as ansible-core holds them (each may have ``aliases``)."""
    known = set(definitions)
    for definition in definitions.values():
        known.update((definition or {}).get("aliases") or [])
    unknown = sorted(str(key) for key in config if key not in known)
    if not unknown:
        return None
    names = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        names.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return (f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(names)}: remove or rename "
            f"{'them' if len(unknown) > 1 else 'it'}; the valid keys are {', '.join(sorted(definitions))}")


def check_hostnames(preferences):
    """Validate the ``hostnames`` option; returns it as a list of dicts ``{name, prefix, separator}``."""
    checked = []
    for preference in preferences or ["instance-id"]:
        if isinstance(preference, str):
            preference = {"name": preference}
        if not isinstance(preference, dict) or not isinstance(preference.get("name"), str) or not preference["name"]:
            raise ManagedNodesError(
                f"hostnames: {preference!r} is not a host name source; give a string such as tag:Name or "
                "a dict with a name (and optionally prefix and separator)"
            )
        source = preference["name"].split("|", 1)[0].strip()
        if not source.startswith("tag:") and source not in HOSTNAME_SOURCES:
            raise ManagedNodesError(
                f"hostnames: unknown host name source {source!r}; use tag:<key>, or one of "
                + ", ".join(HOSTNAME_SOURCES)
            )
        checked.append({"name": preference["name"], "prefix": preference.get("prefix") or "",
                        "separator": preference.get("separator", "_")})
    return checked


def _tag_name(source, tags):
    """tag:Name, tag:Role=web (gives Role_web when it matches), tag:A,B (the first tag present)."""
    for alternative in source[4:].split(","):
        if "=" in alternative:
            key, value = alternative.split("=", 1)
            if tags.get(key) == value:
                return f"{key}_{value}"
        elif tags.get(alternative):
            return tags[alternative]
    return None


def name_from(node, source):
    """One host name source read from a node; None when the node does not have it."""
    ssm, ec2, tags = node["ssm"], node.get("ec2") or {}, node.get("tags") or {}
    if source.startswith("tag:"):
        return _tag_name(source, tags)
    if source == "instance-id":
        return ssm.get("instance_id")
    if source == "computer-name":
        return ssm.get("computer_name")
    if source == "name":
        return ssm.get("node_name") or tags.get("Name")
    if source == "private-dns-name":
        return ec2.get("private_dns_name")
    if source == "private-ip-address":
        return ec2.get("private_ip_address") or ssm.get("ip_address")
    if source == "dns-name":
        return ec2.get("public_dns_name")
    if source == "ip-address":
        return ec2.get("public_ip_address")
    return None


def _candidate(node, preference, transform):
    def read(text):
        source, _bar, jinja_filter = text.partition("|")
        value = name_from(node, source.strip())
        if value and jinja_filter.strip() and transform is not None:
            value = transform(value, jinja_filter.strip())
        return value

    name = read(preference["name"])
    if name and preference["prefix"]:
        source = preference["prefix"].split("|", 1)[0].strip()
        known = source.startswith("tag:") or source in HOSTNAME_SOURCES
        prefix = read(preference["prefix"]) if known else preference["prefix"]
        if not prefix:
            return None
        name = f"{prefix}{preference['separator']}{name}"
    return str(name) if name else None


def assign_hostnames(nodes, preferences, transform=None):
    """Give every node one host name, never the same twice.

    Each preference is tried in order for the nodes still unnamed; a name that two or more of them would get
    (an Auto Scaling group's shared Name tag, say) or that is already taken goes to none of them, and they
    fall through to the next preference, finally to their instance id, which is unique. Returns
    ``(names by instance id, {shared name: how many nodes wanted it})``.
    """
    names = {}
    taken = set()
    shared = {}
    pending = sorted(nodes, key=lambda n: n["ssm"]["instance_id"])
    ids = {node["ssm"]["instance_id"] for node in pending}
    for preference in preferences:
        candidates = [(node, _candidate(node, preference, transform)) for node in pending]
        counts = {}
        for _node, name in candidates:
            if name:
                counts[name] = counts.get(name, 0) + 1
        rest = []
        for node, name in candidates:
            own_id = node["ssm"]["instance_id"]
            if name and counts[name] == 1 and name not in taken and (name == own_id or name not in ids):
                names[own_id] = name
                taken.add(name)
                continue
            if name and counts[name] > 1:
                shared[name] = counts[name]
            rest.append(node)
        pending = rest
    for node in pending:
        instance_id = node["ssm"]["instance_id"]
        names[instance_id] = instance_id
    return names, shared


# --- host variables and groups ------------------------------------------------------------------------------


def host_vars(node, connection=None, bucket_name=None, addressing_style=None, profile=None):
    """Every variable the inventory sets on a node's host: SSM's and EC2's facts, and how to connect."""
    ssm = node["ssm"]
    instance_id = ssm["instance_id"]
    out = dict(ssm)
    out.update(node.get("ec2") or {})
    # Not "tags": that is a play keyword, and ansible-core warns on every run about a variable of that name.
    out["node_tags"] = dict(node.get("tags") or {})
    out["region"] = node["region"]
    out["ansible_host"] = instance_id
    out["ansible_aws_ssm_instance_id"] = instance_id
    out["ansible_aws_ssm_region"] = node["region"]
    if connection:
        out["ansible_connection"] = connection
    if bucket_name:
        out["ansible_aws_ssm_bucket_name"] = bucket_name
    if addressing_style:
        out["ansible_aws_ssm_s3_addressing_style"] = addressing_style
    if profile:
        out["ansible_aws_ssm_profile"] = profile
    if ssm.get("platform_type") == "Windows":
        out["ansible_shell_type"] = "powershell"
    return out


_UNSAFE_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")


def group_name(*parts):
    return _UNSAFE_GROUP_CHARS.sub("_", "_".join(str(p) for p in parts).lower())


def default_groups(node):
    """ssm_platform_linux, ssm_ping_online, ssm_region_us_east_1, ssm_resource_ec2instance."""
    ssm = node["ssm"]
    groups = [group_name("ssm_region", node["region"])]
    for prefix, value in (("ssm_platform", ssm.get("platform_type")), ("ssm_ping", ssm.get("ping_status")),
                          ("ssm_resource", ssm.get("resource_type"))):
        if value:
            groups.append(group_name(prefix, value))
    return groups
