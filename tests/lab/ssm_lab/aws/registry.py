"""The control plane's own state: managed nodes, sessions, commands, service settings, the fault model.

moto keeps EC2, IAM, S3, Logs, KMS and SSM documents; this keeps what moto does not model. All access goes
through one lock: the HTTP server is threaded and the message server runs on its own event loop.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import common
from . import authz, iamsim, reachability

DHMC_SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"
SERVICE_SETTING_DEFAULTS = {DHMC_SETTING: "$None"}
SNAPSHOT_SECONDS = 600


@dataclass
class FaultModel:
    """Latency and faults, all off by default."""

    api_delay: float = 0.0  # seconds added to every AWS API call (S3 excepted)
    session_start_delay: float = 0.0  # seconds added to StartSession
    stream_rtt: float = 0.0  # seconds of round trip on every session stream
    s3_delay: float = 0.0  # seconds added to every S3 request, presigned ones from nodes included
    throttle_rate: float = 0.0  # share of API calls that fail with ThrottlingException
    # The data channel (wire.py): how long the service waits for a client's acknowledgements before it ends the
    # session, how long a session whose WebSocket dropped waits for ResumeSession, how long a started session waits
    # for its client's first connection, and the agent version its handshake announces ("": the node agent's own;
    # "3.0.161.0" selects the basic, unmultiplexed port mode). drop_channel_every: the service breaks each session's
    # WebSocket (no close frame) once it has been open that many seconds, as AWS does about hourly; 0 never.
    ack_timeout: float = 30.0
    resume_window: float = 10.0
    open_window: float = 60.0
    handshake_agent_version: str = ""
    drop_channel_every: float = 0.0
    # stall_channel_after: once a session's WebSocket has been open that many seconds the service goes silent on it (no
    # output, no acknowledgement, no pong; what the client sends is read and dropped) while TCP stays open, as a
    # service or node that stops answering does. half_close_channel_after: the service half-closes the TCP connection
    # (FIN, no close frame) and keeps reading. 0 never; both apply again to each new WebSocket.
    stall_channel_after: float = 0.0
    half_close_channel_after: float = 0.0
    # expired_session_tokens (0 or 1): every call signed with temporary credentials (a session token) is refused as
    # AWS refuses them once they have expired (S3 and the lab's own calls excepted).
    expired_session_tokens: float = 0.0
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    PROFILES = {
        "off": {},
        # Figures of the order seen on AWS from a controller in the same region.
        "aws": {"api_delay": 0.1, "session_start_delay": 0.7, "stream_rtt": 0.03, "s3_delay": 0.06},
        "flaky": {"api_delay": 0.05, "throttle_rate": 0.05},
    }

    def update(self, values: dict[str, Any]) -> None:
        profile = values.get("profile")
        if profile:
            if profile not in self.PROFILES:
                raise ValueError(f"unknown fault profile {profile!r}; known: {', '.join(self.PROFILES)}")
            for name in ("api_delay", "session_start_delay", "stream_rtt", "s3_delay", "throttle_rate"):
                setattr(self, name, 0.0)
            values = {**self.PROFILES[profile], **{k: v for k, v in values.items() if k != "profile"}}
        for name, value in values.items():
            if name in ("api_delay", "session_start_delay", "stream_rtt", "s3_delay", "throttle_rate"):
                value = float(value)
                if value < 0 or (name == "throttle_rate" and value > 1):
                    raise ValueError(f"{name} out of range: {value}")
                setattr(self, name, value)
            elif name in ("ack_timeout", "resume_window", "open_window"):
                value = float(value)
                if value <= 0:
                    raise ValueError(f"{name} must be positive, not {value}")
                setattr(self, name, value)
            elif name == "expired_session_tokens":
                value = float(value)
                if value not in (0, 1):
                    raise ValueError(f"expired_session_tokens must be 0 (off) or 1 (on), not {value}")
                self.expired_session_tokens = value
            elif name in ("drop_channel_every", "stall_channel_after", "half_close_channel_after"):
                value = float(value)
                if value < 0:
                    raise ValueError(f"{name} must be 0 (never) or a number of seconds, not {value}")
                setattr(self, name, value)
            elif name == "handshake_agent_version":
                value = str(value or "")
                if value and (len(value.split(".")) != 4 or not all(p.isdigit() for p in value.split("."))):
                    raise ValueError(f"handshake_agent_version must be four numbers like 3.0.161.0, not {value!r}")
                self.handshake_agent_version = value
            elif name == "seed":
                self.seed = None if value is None else int(value)
                self._rng.seed(self.seed)
            else:
                raise ValueError(f"unknown fault setting {name!r}")

    def throttled(self) -> bool:
        return self.throttle_rate > 0 and self._rng.random() < self.throttle_rate

    def as_dict(self) -> dict:
        return {
            "api_delay": self.api_delay,
            "session_start_delay": self.session_start_delay,
            "stream_rtt": self.stream_rtt,
            "s3_delay": self.s3_delay,
            "throttle_rate": self.throttle_rate,
            "ack_timeout": self.ack_timeout,
            "resume_window": self.resume_window,
            "open_window": self.open_window,
            "handshake_agent_version": self.handshake_agent_version,
            "drop_channel_every": self.drop_channel_every,
            "stall_channel_after": self.stall_channel_after,
            "half_close_channel_after": self.half_close_channel_after,
            "expired_session_tokens": self.expired_session_tokens,
            "seed": self.seed,
        }


@dataclass
class Node:
    id: str
    kind: str  # "ec2" | "hybrid" | "record" (a registration with no agent process, for scale tests)
    hostname: str
    ip: str
    region: str = ""  # where the node is registered; empty: the lab's first region (common.REGION)
    platform: str = "al2023"
    name: str = ""  # hybrid (mi-) nodes: the activation's default instance name
    tags: dict[str, str] = field(default_factory=dict)  # hybrid (mi-) nodes: SSM tags
    iam_role: str = ""  # hybrid (mi-) nodes: the activation's service role
    registered_at: float = field(default_factory=time.time)
    agent_wanted: bool = True  # the node's service manager: should the agent run?
    agent_down_until: float = 0.0  # a transient drop (fault model)
    sshd: bool = False  # answers AWS-StartSSHSession with sshd -i inside the node
    light: bool = False  # an EC2 node whose agent runs in the sandbox every light node shares (ssm-lab up --light-nodes)
    agent: Any = None  # the live control channel, set by the message server
    agent_seen: float | None = None
    agent_version: str = common.AGENT_VERSION  # what the agent said when it connected
    boot: int = 0  # RebootInstances counts up; the agent host then boots the node (agent only if enabled)
    booted: int = 0  # the last boot the agent host finished
    ever_online: bool = False
    last_ping: float | None = None
    _cache: tuple[float, list] | None = None

    def platform_info(self) -> dict:
        return common.PLATFORMS.get(self.platform, common.AMAZON_LINUX_2023)

    def resource_type(self) -> str:
        return "EC2Instance" if self.kind in ("ec2", "record") and self.id.startswith("i-") else "ManagedInstance"

    def is_ec2(self) -> bool:
        return self.resource_type() == "EC2Instance"

    def agent_should_run(self) -> bool:
        return self.agent_wanted and time.time() >= self.agent_down_until


@dataclass
class Session:
    id: str
    target: str
    document: str
    session_type: str  # Standard_Stream | Port | InteractiveCommands
    parameters: dict
    owner: str
    reason: str
    token: str
    run_as: str
    preferences: dict
    owner_id: str = ""  # the starter's aws:userid: the session's aws:ssmmessages:session-id tag
    token_key: str = ""  # the access key that was handed the current token (StartSession, ResumeSession)
    token_region: str = ""  # and the region it asked in
    started: float = field(default_factory=time.time)
    ended: float | None = None
    status: str = "Connecting"  # Connecting | Connected | Disconnected | Terminating | Terminated | Failed
    details: str = ""
    last_activity: float = field(default_factory=time.time)
    transcript: bytearray = field(default_factory=bytearray)
    output_url: dict = field(default_factory=dict)
    streams: set = field(default_factory=set)
    next_stream: int = 0

    def active(self) -> bool:
        return self.status in ("Connecting", "Connected", "Disconnected")


@dataclass
class Invocation:
    command_id: str
    instance_id: str
    status: str = "Pending"
    details: str = "Pending"
    response_code: int = -1
    stdout: str = ""
    stderr: str = ""
    started: float | None = None
    ended: float | None = None
    stdout_url: str = ""
    stderr_url: str = ""


@dataclass
class Command:
    id: str
    document: str
    parameters: dict
    instance_ids: list[str]
    targets: list[dict]
    comment: str
    max_concurrency: str
    max_errors: str
    timeout_seconds: int
    output_bucket: str
    output_prefix: str
    cloudwatch: dict
    requested: float = field(default_factory=time.time)
    status: str = "Pending"
    details: str = "Pending"
    invocations: dict[str, Invocation] = field(default_factory=dict)

    def counts(self) -> tuple[int, int, int]:
        done = [i for i in self.invocations.values() if i.status not in ("Pending", "InProgress", "Delayed")]
        errors = [i for i in self.invocations.values() if i.details in ("Failed", "ExecutionTimedOut")]
        delivery = [i for i in self.invocations.values() if i.details == "DeliveryTimedOut"]
        return len(done), len(errors), len(delivery)


STREAM_COUNTS = ("sessions", "input_messages", "output_messages", "round_trips")


class Registry:
    def __init__(self, account_id: str = common.ACCOUNT_ID, region: str = common.REGION) -> None:
        self.lock = threading.RLock()
        self.account_id = account_id
        self.region = region
        self.nodes: dict[str, Node] = {}
        self.sessions: dict[str, Session] = {}
        self.commands: dict[str, Command] = {}
        self.settings: dict[str, dict] = {}
        self.faults = FaultModel()
        self.api_calls: dict[str, int] = {}
        self.api_regions: dict[str, dict[str, int]] = {}  # the same calls by the region they were signed for
        self.api_throttled: dict[str, int] = {}  # the calls the fault model throttled, by service:action
        # The data channels' traffic (the benchmarks read it): data messages each way, and round trips, a round trip
        # being client data that follows output the service sent (the client waited for an answer and spoke again).
        self.stream_counts: dict[str, int] = dict.fromkeys(STREAM_COUNTS, 0)
        # Listings that span several pages (DescribeInstanceInformation, GetInventory, GetResources) are taken
        # once, at their first page, and served from here by their NextToken, as a consistent snapshot.
        self.snapshots: dict[str, tuple[float, list]] = {}

    # --- nodes -----------------------------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        with self.lock:
            self.nodes[node.id] = node

    def node_region(self, node: Node) -> str:
        return node.region or self.region

    def dhmc_role(self) -> str | None:
        value = self.settings.get(DHMC_SETTING, {}).get("value")
        return None if value in (None, "", "$None") else value

    def problems(self, node: Node, use_cache: bool = True) -> list[reachability.Problem]:
        """Why the node is not Online right now (empty: it is)."""
        stamp = time.time()
        if use_cache and node._cache and stamp - node._cache[0] < common.STATUS_CACHE_SECONDS:
            return node._cache[1]
        found: list[reachability.Problem] = []
        if node.kind == "record":
            pass
        elif node.agent is None:
            found.append(
                reachability.Problem("agent", "AGENT_NOT_CONNECTED", f"the SSM Agent on {node.id} is not running")
            )
        if node.kind == "ec2":
            found.extend(reachability.node_problems(self.account_id, self.node_region(node), node.id,
                                                    self.dhmc_role()))
        if not found:
            node.ever_online = True
            node.last_ping = stamp
        node._cache = (stamp, found)
        return found

    def ping_status(self, node: Node) -> str | None:
        """Online, ConnectionLost, or None while the node never registered."""
        if not self.problems(node):
            return "Online"
        return "ConnectionLost" if node.ever_online else None

    def s3_reachable(self, node: Node) -> bool:
        if node.kind != "ec2":
            return True
        return not reachability.s3_path_problems(self.account_id, self.node_region(node), node.id)

    def endpoint_denial(self, node: Node | None, service: str, action: str, resource: str, who=None):
        """The refusal of the VPC endpoint that carries the node's request (reachability.endpoint_denial), or None."""
        if node is None or node.kind != "ec2":
            return None
        return reachability.endpoint_denial(self.account_id, self.node_region(node), node.id, service, action,
                                            resource, who=who, dhmc_role=self.dhmc_role())

    def node_session(self, node: Node | None) -> authz.Caller | None:
        """The role session a node's agent signs its own requests with (named after the node): an EC2 node's
        instance profile role or Default Host Management role, a hybrid node's activation role; None when there is
        none or IAM does not know the role (a hybrid node's role the lab never created: its writes are not judged)."""
        if node is None or node.kind == "record":
            return None
        if node.kind == "ec2":
            role_arn = reachability.node_role_arn(self.account_id, self.node_region(node), node.id, self.dhmc_role())
        elif node.iam_role:
            name = node.iam_role.rsplit("/", 1)[-1]
            role_arn = f"arn:{authz.partition_of(self.node_region(node))}:iam::{self.account_id}:role/{name}"
        else:
            role_arn = None
        return authz.role_session(self.account_id, role_arn, node.id) if role_arn else None

    def node_write_denial(self, node: Node | None, service: str, action: str, resource: str, context: dict | None = None):
        """AWS's refusal of a write the node's agent makes (a transcript, Run Command output) to S3 or CloudWatch
        Logs, or of a download (a pull bundle), or None: the identity-based policies of the node's role session (``node_session``) first, then the
        policy of the VPC endpoint that carries the request (``endpoint_denial``). Both have ``message(quoted)``."""
        who = self.node_session(node)
        if who is not None:
            decision, boundary = authz.identity_decision(who, action, resource, context or {})
            if decision != iamsim.ALLOWED:
                return authz.Denied(who, action, resource, decision, boundary=boundary)
        return self.endpoint_denial(node, service, action, resource)

    def node_put_object_denial(self, node: Node | None, bucket: str, key: str):
        """AWS's refusal of the node's PutObject of ``key`` to ``bucket`` (``node_write_denial``), or, when the
        bucket's default encryption is SSE-KMS, of the kms:GenerateDataKey S3 asks on the node's behalf (the key
        policy and the role's policies, with kms:ViaService s3.REGION.amazonaws.com and the encryption context
        aws:s3:arn: the bucket's ARN with an S3 Bucket Key, else the object's); None when it is allowed."""
        return self._node_object_denial(node, bucket, key, ("s3:PutObject", "kms:GenerateDataKey"))

    def node_get_object_denial(self, node: Node | None, bucket: str, key: str):
        """AWS's refusal of the node's GetObject of ``key`` from ``bucket`` (the bundle AWS-ApplyAnsiblePlaybooks
        downloads with the instance profile), or, when the bucket's default encryption is SSE-KMS, of the
        kms:Decrypt S3 asks on the node's behalf (as ``node_put_object_denial``); None when it is allowed."""
        return self._node_object_denial(node, bucket, key, ("s3:GetObject", "kms:Decrypt"))

    def _node_object_denial(self, node: Node | None, bucket: str, key: str, actions: tuple[str, str]):
        """The two judgements of a node's object write or read: the S3 action, then the KMS one through S3."""
        s3_action, kms_action = actions
        partition = authz.partition_of(self.region)
        bucket_arn = f"arn:{partition}:s3:::{bucket}"
        denial = self.node_write_denial(node, "s3", s3_action, f"{bucket_arn}/{key}")
        if denial is not None:
            return denial
        kms_key, bucket_key = authz.bucket_kms_key(self.account_id, self.region, bucket)
        if kms_key is None:
            return None
        context = {"kms:ViaService": f"s3.{self.region}.amazonaws.com",
                   "kms:EncryptionContext:aws:s3:arn": bucket_arn if bucket_key else f"{bucket_arn}/{key}"}
        return authz.kms_denial(self.node_session(node), kms_key, kms_action, context)

    def snapshot(self, rows: list) -> str:
        """Keep a listing for its later pages; returns its key. Old snapshots (10 minutes) are dropped."""
        key = common.random_hex(16)
        now = time.time()
        with self.lock:
            for old in [k for k, (stamp, _rows) in self.snapshots.items() if now - stamp > SNAPSHOT_SECONDS]:
                del self.snapshots[old]
            self.snapshots[key] = (now, rows)
        return key

    def count_stream(self, name: str) -> None:
        with self.lock:
            self.stream_counts[name] += 1

    def count_call(self, action: str, region: str = "") -> None:
        with self.lock:
            self.api_calls[action] = self.api_calls.get(action, 0) + 1
            if region:
                calls = self.api_regions.setdefault(region, {})
                calls[action] = calls.get(action, 0) + 1

    def count_throttled(self, action: str) -> None:
        """A call the fault model throttled (counted by count_call too)."""
        with self.lock:
            self.api_throttled[action] = self.api_throttled.get(action, 0) + 1
