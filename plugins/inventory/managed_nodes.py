# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
name: managed_nodes
version_added: 0.1.0
short_description: Every node AWS Systems Manager can reach, EC2 and hybrid, ready to connect over Session Manager
description:
  - Lists the managed nodes of AWS Systems Manager (SSM) in one or more regions, EC2 instances and hybrid
    (C(mi-)) nodes alike, with the C(DescribeInstanceInformation) API, and joins the EC2 ones with
    C(DescribeInstances) for their tags, placement, network and state. Each node is one host.
  - Offline nodes are left out unless O(ping_status) asks for them, so a play does not fail late on a node
    Session Manager cannot reach.
  - Each host gets what the P(amazon.aws.aws_ssm#connection) connection needs (or, with O(connection) set to
    V(ansible.builtin.ssh), what ssh over Session Manager needs), so no other variable is required -
    C(ansible_connection), C(ansible_aws_ssm_instance_id), C(ansible_aws_ssm_region) (the node's own region),
    C(ansible_host) (the instance id, whatever the host name), and, from the options, the transfer bucket,
    its addressing style and the AWS profile; Windows nodes also get C(ansible_shell_type=powershell).
  - The configuration file must end with C(managed_nodes.yml) or C(managed_nodes.yaml), for example
    C(inventory/fleet.managed_nodes.yml).
  - Calls are page-sized (50 nodes for SSM, 1,000 instances for EC2), never one per node, and run in
    parallel within a region (O(concurrency)) and across regions. See C(docs/inventory.md) in the collection
    for how the two sources are joined and what it costs in API calls.
author:
  - bastionless.ssm maintainers (@bastionless)
notes:
  - Needs C(ssm:DescribeInstanceInformation), C(ec2:DescribeInstances) and, for the tags of hybrid nodes,
    C(tag:GetResources). With O(regions) empty, also C(ec2:DescribeRegions).
  - Values that come from AWS (tags, names) are never templated.
  - When this inventory cannot be made (no credentials, a misspelled key), ansible-core only warns and runs on no
    host, exiting 0, unless C(any_unparsed_is_failed) is set in the C([inventory]) section of C(ansible.cfg) (or
    E(ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=True)); without it, the error ends with that advice.
  - The cache (O(cache)) keeps AWS's answers; host names, groups and variables are computed again from them on
    every run, so changing O(hostnames), O(compose) or the groups needs no O(cache) flush, but changing
    O(regions), a filter or O(ping_status) does (C(ansible-inventory --flush-cache)).
extends_documentation_fragment:
  - inventory_cache
  - constructed
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
  - amazon.aws.assume_role.plugins
  - bastionless.ssm.aws_retries
options:
  plugin:
    description: The name of this plugin; it must be V(bastionless.ssm.managed_nodes).
    type: str
    required: true
    choices: ['bastionless.ssm.managed_nodes']
  regions:
    description:
      - The regions to list the managed nodes of, all at once.
      - Empty (the default) means every region C(DescribeRegions) returns for the account.
      - A region the installed botocore does not know (a typo, or a region newer than botocore) is refused before
        any AWS call, with the nearest names and the fix, unless an endpoint is given (O(endpoint_url),
        E(AWS_ENDPOINT_URL) or E(AWS_ENDPOINT_URL_SSM)); the endpoint then decides which regions there are.
    type: list
    elements: str
    default: []
  ping_status:
    description:
      - Which nodes to list by their SSM ping status.
      - V(Online) (the default) lists only the nodes Session Manager can reach now. V(all) lists every node,
        offline ones too; their C(ping_status) variable and the C(ssm_ping_*) groups tell them apart.
    type: list
    elements: str
    choices: ['Online', 'ConnectionLost', 'Inactive', 'all']
    default: ['Online']
  resource_types:
    description:
      - Which kinds of managed node to list; V(EC2Instance) are EC2 instances, V(ManagedInstance) hybrid
        (C(mi-)) nodes registered with an activation.
    type: list
    elements: str
    choices: ['EC2Instance', 'ManagedInstance']
    default: ['EC2Instance', 'ManagedInstance']
  platform_types:
    description:
      - Only nodes of these platforms. Empty (the default) means all.
    type: list
    elements: str
    choices: ['Linux', 'Windows', 'MacOS']
    default: []
  filters:
    description:
      - A dictionary of EC2 filters (the C(describe-instances) filter names, for example C(tag:Env),
        C(vpc-id), C(instance-type)). A node is listed when it matches O(filters) or any entry of
        O(include_filters).
      - EC2 instances are filtered by EC2 itself. Hybrid nodes are matched against the filters that mean
        something for them - C(tag:<key>), C(tag-key), C(tag-value) (their SSM tags), C(instance-id),
        C(private-ip-address) and C(platform) (V(windows)) - with EC2's C(*) and C(?) wildcards; any other
        filter does not match a hybrid node, except C(instance-state-name) and C(instance-state-code), which are
        ignored for them (use O(ping_status)).
      - Without an instance state filter, EC2 instances are listed when C(running) (or, when O(ping_status) asks
        for offline nodes too, in any state but C(terminated)).
    type: dict
    default: {}
  include_filters:
    description:
      - A list of filter dictionaries as in O(filters); a node that matches any of them is listed.
      - Each entry costs its own C(DescribeInstances) listing.
    type: list
    elements: dict
    default: []
  exclude_filters:
    description:
      - A list of filter dictionaries as in O(filters); a node that matches any of them is left out, even when
        an include filter matches it.
    type: list
    elements: dict
    default: []
  hostnames:
    description:
      - Host names in order of preference, as in P(amazon.aws.aws_ec2#inventory). The first one a node has, and no
        other node wants too, is its host name; the last resort is its instance id. The connection always
        targets the instance id.
      - Sources - V(instance-id) (the default), V(tag:<key>) (SSM tags for hybrid nodes), V(tag:<key>=<value>)
        (gives C(<key>_<value>) when the tag has that value), V(tag:<key1>,<key2>) (the first tag present),
        V(computer-name) (the host name the agent reports), V(private-dns-name), V(private-ip-address) (a hybrid
        node's reported address), V(dns-name), V(ip-address) (public), V(name) (a hybrid node's activation name,
        else its Name tag).
      - A Jinja2 filter may follow, for example V(tag:Name | lower).
      - When two or more nodes would get the same name (instances of an Auto Scaling group share their Name
        tag), none of them gets it; they fall through to the next preference, and a warning says so.
      - An entry may be a dictionary with O(hostnames.name), O(hostnames.prefix) and O(hostnames.separator).
    type: list
    elements: raw
    default: ['instance-id']
    suboptions:
      name:
        description: The host name source.
        type: str
        required: true
      prefix:
        description:
          - Put before the name, with O(hostnames.separator) between. A source as in O(hostnames.name), else
            the text itself.
        type: str
        default: ''
      separator:
        description: Between O(hostnames.prefix) and the name.
        type: str
        default: '_'
  connection:
    description:
      - The connection plugin every host uses (C(ansible_connection)). An empty string sets none.
      - V(ansible.builtin.ssh) (or V(ssh)) is for ssh over Session Manager (C(AWS-StartSSHSession)) - each host
        gets C(ansible_host), its instance id, which the ssh config's C(Host i-* mi-*) block sends through the
        session (the C(bastionless.ssm.ssh_over_ssm) role writes that block), and no C(ansible_aws_ssm_*)
        variable; O(bucket_name), O(s3_addressing_style) and O(pass_profile) are then ignored. See
        C(docs/ssh-over-ssm.md) in the collection for the group_vars (user, pipelining, ControlPersist).
    type: str
    default: amazon.aws.aws_ssm
  bucket_name:
    description:
      - The S3 bucket P(amazon.aws.aws_ssm#connection) moves files through (C(ansible_aws_ssm_bucket_name)). Unset, the
        hosts get none, and group_vars can set it.
    type: str
  s3_addressing_style:
    description:
      - The S3 addressing style of the transfer bucket (C(ansible_aws_ssm_s3_addressing_style)).
        V(virtual) helps when the bucket is in another region than the nodes.
    type: str
    choices: ['path', 'virtual', 'auto']
  pass_profile:
    description:
      - Whether the hosts get the O(profile) this inventory uses as C(ansible_aws_ssm_profile), so that the
        connection uses the same account and credentials (for example a profile with a C(role_arn) for another
        account).
    type: bool
    default: true
  node_group:
    description:
      - A group every listed node belongs to, for group_vars. An empty string adds no group.
    type: str
    default: ssm_nodes
  default_groups:
    description:
      - Whether to add each node to C(ssm_platform_<type>) (V(ssm_platform_linux), V(ssm_platform_windows)),
        C(ssm_ping_<status>) (V(ssm_ping_online), V(ssm_ping_connectionlost)), C(ssm_region_<region>)
        (V(ssm_region_us_east_1)) and C(ssm_resource_<type>) (V(ssm_resource_ec2instance),
        V(ssm_resource_managedinstance)).
    type: bool
    default: true
  strict_permissions:
    description:
      - By default an access denied error fails the inventory. With V(false) the call is skipped with a
        warning; for example without C(tag:GetResources), hybrid nodes are listed without their tags.
    type: bool
    default: true
  concurrency:
    description:
      - How many API calls may be in flight at once in each region.
      - Systems Manager throttles an account's calls per region; lower this if the inventory meets
        C(ThrottlingException) often (throttled calls are retried).
    type: int
    default: 8
"""

EXAMPLES = r"""
# inventory/fleet.managed_nodes.yml: every Online node of two regions, hybrid nodes included,
# named by their Name tag, connecting through Session Manager with a transfer bucket.
plugin: bastionless.ssm.managed_nodes
regions:
  - eu-west-1
  - eu-central-1
hostnames:
  - tag:Name
  - instance-id
bucket_name: my-team-ssm-transfer

---

# Production Linux nodes only, EC2 and on-premises alike (hybrid nodes match through their SSM tags),
# without the ones being drained; groups by the Role tag.
plugin: bastionless.ssm.managed_nodes
regions:
  - us-east-1
platform_types:
  - Linux
filters:
  tag:Env: prod
exclude_filters:
  - tag:Drain: 'true'
keyed_groups:
  - key: node_tags.Role | default('none')
    prefix: role

---

# Every node, offline ones too, for a report; offline ones land in ssm_ping_connectionlost.
plugin: bastionless.ssm.managed_nodes
regions:
  - us-east-1
ping_status: all
compose:
  ansible_aws_ssm_timeout: 120

---

# Another account: an AWS profile whose role_arn is in that account (~/.aws/config). The hosts get the
# profile too (pass_profile), so the aws_ssm connection opens its sessions in that account.
plugin: bastionless.ssm.managed_nodes
profile: prod-operator
regions:
  - us-east-1
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ansible-inventory
cache_timeout: 300

---

# ssh over Session Manager (AWS-StartSSHSession) instead of the aws_ssm connection: each host's ansible_host is its
# instance id, which the bastionless.ssm.ssh_over_ssm role's block in ~/.ssh/config sends through the session;
# group_vars set ansible_user, ansible_pipelining and ControlPersist (docs/ssh-over-ssm.md).
plugin: bastionless.ssm.managed_nodes
regions:
  - us-east-1
hostnames:
  - tag:Name
  - instance-id
connection: ansible.builtin.ssh
"""

import concurrent.futures
import os

try:
    import boto3
    import botocore
except ImportError:
    pass  # amazon.aws's base reports a missing SDK

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19
    trust_as_template = None

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.errors import AnsibleParserError
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from ansible_collections.amazon.aws.plugins.plugin_utils.botocore import get_aws_connection_info
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase

from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import RetrySettingError
from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import retry_settings
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import ManagedNodesError
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import RegionFetch
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import assign_hostnames
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import check_hostnames
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import default_groups
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import drop_unused_instance_xml
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import given_endpoint
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import host_vars
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import include_filter_dicts
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import region_refusal
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import unknown_keys_problem
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import unknown_region_note
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import unparsed_note
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import unreachable_fix
from ansible_collections.bastionless.ssm.plugins.plugin_utils.managed_nodes import wanted_ping_statuses
from ansible_collections.bastionless.ssm.plugins.plugin_utils._session_support import profile_problem
from ansible_collections.bastionless.ssm.plugins.plugin_utils._target_diagnosis import known_regions

SERVICES = ("ssm", "ec2", "resourcegroupstaggingapi")
MAX_PARALLEL_REGIONS = 8
DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException")
SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "ansible.legacy.ssh")
SESSION_CONNECTION = "bastionless.ssm.session"
# The options amazon.aws's inventory base templates (the same, so that an inventory file means what it means there).
TEMPLATABLE_OPTIONS = AWSInventoryBase.TemplatedOptions.TEMPLATABLE_OPTIONS


def for_connection(variables, connection):
    """A host's variables for its connection. Over ssh (ssh over Session Manager), ``ansible_host`` (the instance
    id, which the ssh config sends through AWS-StartSSHSession) stays and nothing of aws_ssm is set."""
    if connection not in SSH_CONNECTIONS:
        return variables
    return {key: value for key, value in variables.items() if not key.startswith("ansible_aws_ssm_")}


def preload_connection(connection, loader=None):
    """Load the collection's session connection plugin in this process (ansible-playbook's, ansible's) when the
    hosts use it, or when their connection is left to group_vars (``connection: ''``), and say whether it did.

    Ansible runs every task of every host in a fork of this process, and a fork that finds the plugin loaded uses it
    as it is; otherwise each one compiles the plugin from source (collections are not byte-compiled) and parses its
    documentation again: about 35 ms of CPU per task and host on a 2-core machine, most of the controller's cost of
    the connection. The plugin also reads botocore's models of a session start here (``prepare_process``), once.
    Nothing depends on it: a failure here is left for the task that uses the connection to report."""
    if connection not in (SESSION_CONNECTION, ""):
        return False
    if loader is None:
        from ansible.plugins.loader import connection_loader as loader  # pylint: disable=import-outside-toplevel
    try:
        plugin = loader.get(SESSION_CONNECTION, class_only=True)
        if plugin is None:
            return False
        prepare = getattr(plugin, "prepare_process", None)
        if prepare is not None:
            prepare()  # botocore's models for the session starts, read once
        return True
    except Exception:  # noqa: BLE001 - an optimisation only; the task reports the plugin's own error
        return False


def _unsafe(value):
    """Mark AWS's values as never to be templated. From ansible-core 2.19 on, data is not templated unless
    trusted, and nothing from AWS is, so wrapping would only cost time on large fleets."""
    return value if trust_as_template is not None else wrap_var(value)


class InventoryModule(AWSInventoryBase):
    NAME = "bastionless.ssm.managed_nodes"
    INVENTORY_FILE_SUFFIXES = ("managed_nodes.yml", "managed_nodes.yaml")

    def get_option(self, option, hostvars=None):
        """The option, templated when it is one of amazon.aws's templatable ones (credentials, profile, endpoint,
        role, regions, filters) and holds a template. amazon.aws's base templates them too, but passes
        ``disable_lookups``, which ansible-core 2.19 deprecates: every command would print that deprecation."""
        value = super(AWSInventoryBase, self).get_option(option, hostvars)  # pylint: disable=bad-super-call
        if option in TEMPLATABLE_OPTIONS and value and self.templar is not None and self.templar.is_template(value):
            return self.templar.template(value)
        return value

    def get_options(self, hostvars=None):
        return super(AWSInventoryBase, self).get_options(hostvars)  # pylint: disable=bad-super-call

    def _read_config_data(self, path):
        """The inventory file, refused when it has a key that is no option: a misspelled key would otherwise be
        ignored, and its default used (every region, say, for a misspelled ``regions``)."""
        config = super()._read_config_data(path)
        problem = unknown_keys_problem(config, self.option_definitions)
        if problem:
            raise AnsibleParserError(f"{path}: {problem}")
        return config

    def _set_frozen_credentials(self):
        """Assume O(assume_role_arn) only when AWS is called: a cache hit makes no call at all."""

    def _assume_role(self):
        super()._set_frozen_credentials()

    def parse(self, inventory, loader, path, cache=True):
        """The inventory; an error that keeps it from being made ends with what ansible-core then does, when that is
        to go on without it (``any_unparsed_is_failed`` off: a collection from Galaxy has no repository ansible.cfg)."""
        try:
            self._parse(inventory, loader, path, cache)
        except AnsibleError as error:
            note = unparsed_note(C.config.get_config_value("INVENTORY_ANY_UNPARSED_IS_FAILED"))
            if not note:
                raise
            raise AnsibleParserError(f"{error.message}{note}") from None

    def _parse(self, inventory, loader, path, cache):
        super().parse(inventory, loader, path, cache=cache)
        try:
            settings = self._settings()
        except (ManagedNodesError, RetrySettingError) as error:
            self.fail_aws(str(error))
        was_cached, results = self.get_cached_result(path, cache)
        if not was_cached:
            self._assume_role()
            results = self._fetch(settings)
        self._populate(results, settings)
        self.update_cached_result(path, cache, results)
        preload_connection(self.get_option("connection"))

    # --- options ------------------------------------------------------------------------------------------
    def _settings(self):
        concurrency = self.get_option("concurrency")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ManagedNodesError(f"concurrency must be a whole number of at least 1, not {concurrency!r}")
        include = self.get_option("include_filters") or []
        exclude = self.get_option("exclude_filters") or []
        for name, value in (("filters", self.get_option("filters")), *(("include_filters", f) for f in include),
                            *(("exclude_filters", f) for f in exclude)):
            if value is not None and not isinstance(value, dict):
                raise ManagedNodesError(f"{name}: each filter set must be a dictionary such as {{'tag:Env': 'prod'}}")
        regions = self.get_option("regions") or []
        if regions:
            known, endpoint = known_regions(), given_endpoint(self.get_option("endpoint_url"), os.environ)
            for region in regions:
                problem = region_refusal(region, known, botocore.__version__, endpoint)
                if problem:
                    raise ManagedNodesError(f"regions: {problem}")
        return {
            "ping_statuses": wanted_ping_statuses(self.get_option("ping_status")),
            "platform_types": list(self.get_option("platform_types") or []),
            "resource_types": list(self.get_option("resource_types") or []),
            "include": include_filter_dicts(self.get_option("filters"), include),
            "exclude": list(exclude),
            "hostnames": check_hostnames(self.get_option("hostnames")),
            "concurrency": concurrency,
            "retries": retry_settings(self.get_option("aws_retry_mode"), self.get_option("aws_max_attempts")),
        }

    # --- AWS ----------------------------------------------------------------------------------------------
    def _clients(self, regions, config):
        """A client per region and service, all from one boto3 session, with the credentials, profile, endpoint and
        botocore settings amazon.aws's inventory plugins use: each service's model is read once rather than once per
        region and client (about a second less for every ansible command on a two-region inventory)."""
        _region, endpoint, params = get_aws_connection_info(self)
        params = {**params, **self._frozen_credentials}
        profile = params.pop("profile_name", None)
        for name in ("aws_config", "config"):
            extra = params.pop(name, None)
            if extra is not None:
                config = config.merge(extra if isinstance(extra, botocore.config.Config)
                                      else botocore.config.Config(**extra))
        try:
            session = boto3.session.Session(profile_name=profile)
            return {
                region: {service: RetryingBotoClientWrapper(
                    session.client(service, region_name=region, endpoint_url=endpoint, config=config, **params),
                    AWSRetry.jittered_backoff()) for service in SERVICES}
                for region in regions
            }
        except botocore.exceptions.ProfileNotFound:
            self.fail_aws(f"Cannot list the managed nodes: {profile_problem(profile, 'the profile key, or AWS_PROFILE')}")
        except (botocore.exceptions.BotoCoreError, ValueError) as error:
            self.fail_aws("Couldn't connect to AWS", exception=error)

    def _fetch(self, settings):
        """List every region's nodes, the regions in parallel, each with its own pool of calls."""
        regions = self._boto3_regions(service="ssm")
        config = botocore.config.Config(max_pool_connections=settings["concurrency"] + 4,
                                        user_agent_extra="bastionless.ssm.managed_nodes",
                                        retries=settings["retries"])
        clients = self._clients(regions, config)
        for region in regions:
            clients[region]["ec2"].client.meta.events.register("before-parse.ec2.DescribeInstances",
                                                               drop_unused_instance_xml)
        strict = self.get_option("strict_permissions")
        warnings = []

        def fetch_region(region):
            def call(service, operation, **kwargs):
                try:
                    return getattr(clients[region][service], operation)(aws_retry=True, **kwargs)
                except is_boto3_error_code(DENIED) as error:
                    if strict:
                        raise
                    warnings.append(f"{region}: {service} {operation} was denied ({error}); skipped, "
                                    "as strict_permissions is false")
                    return {}

            with concurrent.futures.ThreadPoolExecutor(settings["concurrency"]) as pool:
                fetch = RegionFetch(region, call, pool.submit, settings["ping_statuses"], settings["platform_types"],
                                    settings["resource_types"], settings["include"], settings["exclude"])
                nodes = fetch.run()
                self.debug(f"managed_nodes: {region}: {len(nodes)} nodes, {fetch.plan or 'no EC2'} plan")
                return nodes

        nodes = {}
        with concurrent.futures.ThreadPoolExecutor(min(max(len(regions), 1), MAX_PARALLEL_REGIONS)) as pool:
            futures = {region: pool.submit(fetch_region, region) for region in regions}
            for region, future in futures.items():
                try:
                    found = future.result()
                except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
                    fix = unreachable_fix(error)
                    note = unknown_region_note(region, known_regions(), botocore.__version__)
                    if fix:
                        self.fail_aws(f"Cannot list the managed nodes of {region}: {fix}{note} ({error})")
                    self.fail_aws(f"Failed to list the managed nodes of {region}{note}", exception=error)
                for node in found:
                    nodes.setdefault(node["ssm"]["instance_id"], node)
        for warning in warnings:
            self.warn(warning)
        return {"nodes": [nodes[i] for i in sorted(nodes)]}

    # --- the inventory ------------------------------------------------------------------------------------
    def _hostname_filter(self, value, jinja_filter):
        expression = f"__bastionless_hostname | {jinja_filter}"
        if trust_as_template is not None:
            expression = trust_as_template(expression)
        return self._compose(expression, {"__bastionless_hostname": value})

    def _populate(self, results, settings):
        nodes = results["nodes"]
        names, shared = assign_hostnames(nodes, settings["hostnames"], self._hostname_filter)
        if shared:
            examples = ", ".join(f"{name!r} ({count} nodes)" for name, count in sorted(shared.items())[:5])
            self.warn(f"managed_nodes: host names wanted by more than one node were given to none of them: {examples}"
                      f"{' and more' if len(shared) > 5 else ''}; those nodes have the next host name preference")
        connection = self.get_option("connection")
        bucket = self.get_option("bucket_name")
        addressing = self.get_option("s3_addressing_style")
        profile = self.get_option("profile") if self.get_option("pass_profile") else None
        node_group = self.get_option("node_group")
        with_defaults = self.get_option("default_groups")
        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        known_groups = set()

        def group(name):
            if name not in known_groups:
                self.inventory.add_group(name)
                known_groups.add(name)
            return name

        if node_group:
            group(node_group)
        for node in nodes:
            host = names[node["ssm"]["instance_id"]]
            self.inventory.add_host(host, group=node_group or None)
            variables = _unsafe(for_connection(host_vars(node, connection, bucket, addressing, profile), connection))
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
            if with_defaults:
                for name in default_groups(node):
                    self.inventory.add_child(group(name), host)
            if compose:
                self._set_composite_vars(compose, variables, host, strict=strict)
            if groups:
                self._add_host_to_composed_groups(groups, variables, host, strict=strict)
            if keyed_groups:
                self._add_host_to_keyed_groups(keyed_groups, variables, host, strict=strict)
