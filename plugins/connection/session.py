# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: session
author:
  - bastionless.ssm maintainers (@bastionless)
short_description: Persistent, bucketless Session Manager connection to EC2 instances and managed nodes
version_added: 0.1.0
description:
  - Runs tasks over AWS Systems Manager Session Manager like P(amazon.aws.aws_ssm#connection), with the same
    options and the same document selection, but without its two costs.
  - B(No plugin binary needed.) With O(transport=native) (the default where the Python package C(websockets) is
    installed) the session's data channel is spoken by the collection itself; O(transport=plugin) runs AWS's
    C(session-manager-plugin) on a pseudo-terminal instead.
  - B(Persistent sessions.) The first task to a host starts a session owned by a background master process
    (as ssh's ControlMaster with ControlPersist); later tasks, also from other C(ansible-playbook) runs of the
    same user and identity, reuse it through a Unix socket only that user can open. The master ends the
    session after O(persist_idle_timeout) seconds without a task, and when the session dies (reboot, agent
    stopped) the next task starts a new one.
  - B(In-band file transfer.) Files and pipelined modules travel through the session itself, base64 encoded (a
    pty cannot mangle them) and checked with SHA-256; no bucket is needed. Files go in chunks of
    O(transfer_chunk_size), one command each, written as they arrive, so memory stays bounded and a large file only
    needs each chunk within O(command_timeout). Above O(transfer_threshold) bytes a file, copied or fetched, goes
    through O(bucket_name) when one is set.
  - B(Pipelining) is on, so a module runs in one round trip. stdout and stderr come back separately, binary
    safe, with the exit status.
  - B(Modules without a new interpreter.) Where the node has C(python3), a resident Python started in the session
    runs each pipelined module with C(ansible.module_utils) already imported and the module's code compiled once, so
    a module costs the node its own work, not the 90 ms or so of CPU of a new interpreter importing C(module_utils)
    again. ansible-core's everyday file and command modules run in that Python itself, every other module in a fork
    of it (O(resident_python), O(module_isolation)).
  - Every command is bounded by O(command_timeout); when the agent or the plugin stops answering, the task fails
    as unreachable in bounded time and the session is ended.
  - Windows nodes (C(ansible_shell_type=powershell)) keep the behaviour of P(amazon.aws.aws_ssm#connection).
notes:
  - The node needs C(/bin/sh), C(base64), C(mktemp) and C(sha256sum) (coreutils); C(curl) only for transfers
    through the bucket. Where it has C(python3), a resident Python reads the commands and runs pipelined modules
    with C(ansible.module_utils) preloaded (O(resident_python)).
  - No credentials are on any command line. On the node, C(curl) reads the presigned URLs of bucket transfers on its
    stdin (C(curl -K -)), so no local user sees them in its arguments. The master gets the StartSession response
    through a pipe; with O(transport=plugin), session-manager-plugin gets it as its first argument, as with
    P(amazon.aws.aws_ssm#connection) and the AWS CLI.
  - The session shell runs with echo off and commands and their stdin are sent base64 encoded, so neither appears
    in session transcripts; what commands print (module results) does, as with any Session Manager shell.
  - C(become) works with C(sudo) rules that need no password (the agent's C(ssm-user) has one). Become passwords
    are refused with an error.
  - See the collection's C(docs/session-connection.md) for when to pick this, P(amazon.aws.aws_ssm#connection) or
    ssh over Session Manager.
  - Tested with ansible-core 2.19 and amazon.aws 10.x, the ranges C(meta/runtime.yml) and C(galaxy.yml) state. Modules
    run in a fork of the node's resident Python only when the controller's ansible-core is 2.19 (the fork preloads
    that release's AnsiballZ loader); with another release they run as plain commands, correct and slower.
  - Windows nodes need amazon.aws 10.x; with another release, or none, their tasks fail with an error naming the range.
requirements:
  - boto3 on the controller, and either the Python package websockets (O(transport=native)) or the AWS
    session-manager-plugin (O(transport=plugin)).
  - ansible-core 2.19; amazon.aws 10.x for Windows nodes (P(amazon.aws.aws_ssm#connection) runs them).
  - The SSM Agent on the node.
seealso:
  - plugin: amazon.aws.aws_ssm
    plugin_type: connection
extends_documentation_fragment:
  - bastionless.ssm.aws_retries
options:
  access_key_id:
    description:
      - AWS access key ID for the SSM and S3 calls; unset, boto3 finds credentials as usual (profile, environment,
        instance role).
    type: str
    vars:
    - name: ansible_aws_ssm_access_key_id
    env:
    - name: AWS_ACCESS_KEY_ID
  secret_access_key:
    description:
      - AWS secret access key that goes with O(access_key_id).
    type: str
    vars:
    - name: ansible_aws_ssm_secret_access_key
    env:
    - name: AWS_SECRET_ACCESS_KEY
  session_token:
    description:
      - Session token of temporary credentials (STS), with O(access_key_id) and O(secret_access_key).
    type: str
    vars:
    - name: ansible_aws_ssm_session_token
    env:
    - name: AWS_SESSION_TOKEN
  instance_id:
    description:
      - The target of the session, an EC2 instance ID (V(i-...)) or a hybrid managed node ID (V(mi-...)).
      - Unset, the host's address (C(ansible_host), else the inventory name) is used.
    type: str
    vars:
    - name: ansible_aws_ssm_instance_id
  region:
    description:
      - AWS region of the node, where the session is started.
    type: str
    vars:
    - name: ansible_aws_ssm_region
    env:
    - name: AWS_REGION
    - name: AWS_DEFAULT_REGION
    default: 'us-east-1'
  bucket_name:
    description:
      - S3 bucket for files larger than O(transfer_threshold) bytes. Optional; unset, every file travels through the
        session itself.
      - Windows nodes (handed to P(amazon.aws.aws_ssm#connection)) need it for every transfer.
    type: str
    vars:
    - name: ansible_aws_ssm_bucket_name
  bucket_endpoint_url:
    description:
      - S3 endpoint for the bucket's requests, for example an interface VPC endpoint for S3. Unset, the regional
        endpoint of the bucket's own region.
    type: str
    vars:
    - name: ansible_aws_ssm_bucket_endpoint_url
  transport:
    description:
      - How the session's master talks to Session Manager once StartSession has answered.
      - V(native) holds the session's WebSocket data channel itself (acknowledgements, resends, resuming after a
        dropped connection), with the Python package C(websockets); no session-manager-plugin and no pseudo-terminal
        on the controller.
      - V(plugin) runs AWS's session-manager-plugin on a pseudo-terminal, as P(amazon.aws.aws_ssm#connection) does
        (see O(plugin)).
      - Unset, V(native) where C(websockets) can be imported, else V(plugin). When the chosen transport cannot run
        (no C(websockets), no plugin), the task fails with an error that says what to install.
      - The option's value is part of the session's identity, so changing it starts a new session. Windows nodes
        always use P(amazon.aws.aws_ssm#connection).
    type: str
    choices: [ 'native', 'plugin' ]
    env:
      - name: ANSIBLE_AWS_SSM_TRANSPORT
    vars:
      - name: ansible_aws_ssm_transport
  plugin:
    description:
      - The session-manager-plugin executable, taken as given when set. Used with O(transport=plugin) (and for
        Windows nodes).
      - When not set, V(/usr/local/bin/session-manager-plugin), else the first C(session-manager-plugin) on E(PATH), as
        P(amazon.aws.aws_ssm#connection) looks for it (ssm_tunnel and ssm_preflight look the same way).
    type: str
    vars:
    - name: ansible_aws_ssm_plugin
    env:
    - name: AWS_SESSION_MANAGER_PLUGIN
  profile:
    description:
      - Named profile of the AWS configuration files whose credentials the SSM and S3 calls use.
    type: str
    vars:
    - name: ansible_aws_ssm_profile
    env:
    - name: AWS_PROFILE
  reconnection_retries:
    description:
      - How many times P(amazon.aws.aws_ssm#connection) tries to connect again, for Windows nodes. Linux nodes use
        O(ssm_timeout) and O(command_timeout) instead; a session that fails is started again by the next task.
    type: integer
    default: 3
    vars:
    - name: ansible_aws_ssm_retries
  aws_retry_mode:
    vars:
    - name: bastionless_aws_retry_mode
  aws_max_attempts:
    vars:
    - name: bastionless_aws_max_attempts
  ssm_timeout:
    description:
      - Seconds a new session may take to be ready (StartSession, the plugin's connection, the shell), and the default
        of O(command_timeout).
    type: integer
    default: 60
    vars:
    - name: ansible_aws_ssm_timeout
  bucket_sse_mode:
    description:
      - Server-side encryption that uploads to O(bucket_name) ask for. Unset, uploads carry the headers of the
        bucket's default encryption.
    type: str
    choices: [ 'AES256', 'aws:kms' ]
    required: false
    vars:
    - name: ansible_aws_ssm_bucket_sse_mode
  bucket_sse_kms_key_id:
    description:
      - KMS key (ID, ARN or alias) for uploads with O(bucket_sse_mode=aws:kms); ignored with any other mode.
    type: str
    vars:
    - name: ansible_aws_ssm_bucket_sse_kms_key_id
  ssm_document:
    description:
      - Session document StartSession uses instead of the account's default shell document
        (C(SSM-SessionManagerRunShell)).
      - A document of type C(Standard_Stream) can set, for example, C(runAsEnabled) and C(runAsDefaultUser), so the
        session runs as that Linux user rather than C(ssm-user)
        (U(https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-schema.html)).
    type: str
    vars:
    - name: ansible_aws_ssm_document
  s3_addressing_style:
    description:
      - How S3 URLs name the bucket (botocore's C(addressing_style)), for the controller's requests and the presigned
        URLs the node downloads.
      - V(virtual) (the bucket in the host name) helps when the bucket is in another region than the node, where the
        path style is redirected (U(https://repost.aws/knowledge-center/s3-http-307-response)).
    type: str
    choices: [ 'path', 'virtual', 'auto' ]
    default: 'auto'
    vars:
    - name: ansible_aws_ssm_s3_addressing_style
  pipelining:
    description:
      - Run modules by sending them on the command's stdin (one round trip per module) instead of copying a file
        to the node first.
      - Unlike the other connections, on by default. Set to V(false) only to debug.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: ansible_aws_ssm_pipelining
  persist_idle_timeout:
    description:
      - Seconds the host's master process keeps its session open without a task, as ssh's C(ControlPersist).
        Then it ends the session and exits; the next task starts a new one.
      - At least V(1); a smaller value fails the task before a session is started.
    type: integer
    default: 60
    env:
      - name: ANSIBLE_AWS_SSM_PERSIST_IDLE_TIMEOUT
    vars:
      - name: ansible_aws_ssm_persist_idle_timeout
  control_path_dir:
    description:
      - The directory of the masters' sockets (and their lock files). Created with mode 0700; a directory other
        users can open is refused.
      - Socket names are a hash of the endpoint, region, profile, access key id, instance, document and local
        user, so a session is only reused by the same identity. The path must stay under 100 bytes.
    type: path
    default: ~/.ansible/cp
    env:
      - name: ANSIBLE_AWS_SSM_CONTROL_PATH_DIR
    vars:
      - name: ansible_aws_ssm_control_path_dir
  command_timeout:
    description:
      - Seconds a command may take, from sending it to the last byte of its answer (every read waits at most
        this long). When it passes, the session is ended and the task fails as unreachable.
      - File transfers are a command per chunk (O(transfer_chunk_size)), so this bounds each chunk, not the whole
        file.
      - Unset, O(ssm_timeout) applies, as with P(amazon.aws.aws_ssm#connection). Raise it for long tasks, or
        run them with C(async).
    type: integer
    vars:
      - name: ansible_aws_ssm_command_timeout
  resident_python:
    description:
      - Where the node has C(python3), run a small resident Python in the session (its source travels through the
        session when it starts; nothing is installed) that reads the commands and runs each with C(/bin/sh -c),
        one process per command instead of the eight or so of the plain sh reader.
      - It also runs pipelined modules (without C(become) or C(environment)) whose interpreter is that C(python3) in
        a fork of itself that has C(ansible.module_utils) already imported, from the first module's own payload. A
        module then costs the node its own work, not a new interpreter importing C(module_utils) again (about 90 ms
        of CPU per module on a small instance). A fork is used only when every preloaded file is the same in the
        module's payload; any other command, or a node without C(python3), runs as before.
      - With it, the commands Ansible runs around a module (the remote home, the task's temporary directory, the files
        put into it and their mode, its removal) go to the node with the task's next command, in one exchange, and a
        module's payload crosses the session once per session, then is named by its SHA-256.
      - Set to V(false) to keep a plain sh reading the commands. Sessions with and without it are separate.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_AWS_SSM_RESIDENT_PYTHON
    vars:
      - name: ansible_aws_ssm_resident_python
  module_isolation:
    description:
      - Where the resident Python (O(resident_python)) runs the pipelined modules it runs.
      - V(auto) runs ansible-core's everyday file and command modules (C(ansible.builtin.command) and C(shell),
        C(copy), C(file), C(stat), C(lineinfile), C(blockinfile), C(replace), C(slurp), C(find), C(ping),
        C(tempfile), and so C(template) and C(fetch)) in the resident Python itself, with no fork; what they change
        in it (working directory, environment, umask, locale, signal handlers, the preloaded modules' globals) is put
        back after each run. Every other module runs in a fork of it. This halves the node's CPU for a small module.
      - V(fork) runs every module in a fork, for a module that turns out to leave something behind that the next one
        sees. A module that leaves a thread running makes the session fork every module after it in any case.
      - Sessions with different values are separate.
    type: string
    choices: [auto, fork]
    default: auto
    env:
      - name: ANSIBLE_AWS_SSM_MODULE_ISOLATION
    vars:
      - name: ansible_aws_ssm_module_isolation
  transfer_threshold:
    description:
      - Files larger than this many bytes are copied to the node, and fetched from it, through the S3 bucket
        O(bucket_name) when one is set; smaller files, and all files when no bucket is set, travel in the session
        itself.
      - Uploads, the controller's and the node's, carry the encryption of O(bucket_sse_mode), or, unset, of the
        bucket's default encryption.
    type: integer
    default: 8388608
    vars:
      - name: ansible_aws_ssm_transfer_threshold
  transfer_chunk_size:
    description:
      - Bytes of a file that one command carries through the session. A file travels as a series of such commands,
        so the controller holds about one chunk of it at a time whatever its size, and each chunk must arrive
        within O(command_timeout), not the whole file. Through the bucket, the node's commands move parts of at
        least 8 MiB (and at least this) each.
      - At least V(65536); rounded down to a multiple of 65536 (the node reads fetched files in blocks of that size).
        Lower it when a chunk takes longer than O(command_timeout) on a slow link.
    type: integer
    default: 4194304
    vars:
      - name: ansible_aws_ssm_transfer_chunk_size
"""

EXAMPLES = r"""
# inventory group_vars: every node of the group over a persistent session, no bucket needed.
# ansible_connection: bastionless.ssm.session
# ansible_aws_ssm_region: us-east-1
# ansible_aws_ssm_persist_idle_timeout: 120

- name: Configure the private fleet over persistent Session Manager sessions
  hosts: ssm_nodes
  gather_facts: false
  vars:
    ansible_connection: bastionless.ssm.session
  tasks:
    - name: Wait until the node answers over Session Manager
      ansible.builtin.wait_for_connection:
        timeout: 120

    - name: Copy a file through the session itself (no S3 bucket)
      ansible.builtin.copy:
        content: "managed over Session Manager\n"
        dest: /tmp/bastionless-session-example.txt
        mode: "0644"

    - name: Run a command as root (the agent's ssm-user may sudo)
      ansible.builtin.command: id -un
      become: true
      changed_when: false

    - name: Fetch a file back
      ansible.builtin.fetch:
        src: /etc/os-release
        dest: fetched/
"""

import getpass
import hashlib
import importlib.util
import inspect
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from ansible.errors import AnsibleConnectionFailure
from ansible.errors import AnsibleError
from ansible.errors import AnsibleFileNotFound
from ansible.errors import AnsibleOptionsError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.release import __version__ as ansible_core_version
from ansible.utils.display import Display

from ansible_collections.bastionless.ssm.plugins.module_utils import _aws_bounds
from ansible_collections.bastionless.ssm.plugins.module_utils import _plugin_path
from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import RetrySettingError
from ansible_collections.bastionless.ssm.plugins.plugin_utils._aws_retries import retry_settings
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_protocol as protocol
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_support as support
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _target_diagnosis as diagnosis

display = Display()

MASTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugin_utils", "_session_master.py")
FRAME = 262144  # bytes of input per frame to the master
TERMINATE_WITHIN = 10  # seconds a TerminateSession may take before the task goes on without its answer
LATE_START_SECONDS = 60  # how much longer than ssm_timeout a StartSession the task gave up on is waited for, to end its session


class _Lock:
    """An exclusive flock on a file, waited for at most timeout seconds (two tasks starting one master)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout, self.fd = path, timeout, None

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise AnsibleConnectionFailure(f"another task has been starting the session for {self.timeout} s "
                                                   f"(lock {self.path})")
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


PENDING_PUT_MAX = 16 << 20  # bytes (and at most transfer_chunk_size): a larger file for the task's temporary directory
# is sent at once, in chunks


class _Pending:
    """A command of the task that waits for its next one (kind: mkdir, chmod or put; path: the directory or file)."""

    def __init__(self, kind: str, cmd: bytes, path: str, data=None, digest: str = "", source: str = "") -> None:
        self.kind, self.cmd, self.path, self.data, self.digest, self.source = kind, cmd, path, data, digest, source


class _NotServed(Exception):
    """The master did not take the request (gone, or going): nothing ran, so starting a new one is safe."""


class Connection(ConnectionBase):
    """Session Manager with a persistent per-host session, in-band transfers and pipelining.

    It takes amazon.aws.aws_ssm's options (same names, variables and defaults) and calls AWS with boto3 itself, only in
    the tasks that need AWS (StartSession, TerminateSession, the bucket); Windows nodes are handed to aws_ssm. A task
    over a running session imports neither boto3 nor aws_ssm: Ansible runs each task in a new worker process, where
    that import alone costs about 80 ms of CPU.
    """

    transport = "bastionless.ssm.session"
    default_user = ""
    # Ansible wraps each command in the task's shell executable (ansible_shell_executable, or raw's executable):
    # "<executable> -c '<command>'", so both are honoured on the node as over ssh.
    allow_executable = True
    allow_extras = True
    has_pipelining = True
    is_windows = False

    def __init__(self, play_context, *args, **kwargs) -> None:
        super().__init__(play_context, *args, **kwargs)
        self._base_args = (play_context, args, kwargs)
        self._base = None
        self._base_version = None
        self._ssm_client = None
        self._s3_client = None
        self.host = self._play_context.remote_addr
        self._instance_id = None
        self._session_id = None
        self._reader = "sh"  # what reads commands on the node, as the master says: "python" (the helper) or "sh"
        self._answer = {}  # the master's answer to this connection's last request
        self._talked = False  # whether the master has answered this connection (so _reader is the session's)
        self._pending = []  # _Pending commands of this task that go with its next command (_shortcut, put_file)
        self._tmpdir = None  # the task's temporary directory, when this connection made it (_shortcut)
        if getattr(self._shell, "SHELL_FAMILY", "") == "powershell":  # as amazon.aws.aws_ssm sets it up
            self.is_windows = True
            self.allow_executable = False  # as amazon.aws.aws_ssm: no POSIX shell to wrap a PowerShell command in
            self.has_native_async = True
            self.always_pipeline_modules = True
            self.module_implementation_preferences = (".ps1", ".exe", "")
            self._shell_type = "powershell"

    def _aws_ssm(self):
        """amazon.aws.aws_ssm's connection to the same host (Windows nodes), made and configured through the plugin API:
        this connection's shell as a constructor argument, its options with set_options, its become plugin."""
        if self._base is None:
            play_context, args, kwargs = self._base_args
            base = connection_loader.get("amazon.aws.aws_ssm", play_context, *args, **dict(kwargs, shell=self._shell))
            if base is None:
                raise AnsibleError(support.amazon_aws_problem(None, found=False))
            self._base_version = support.collection_version(_collection_dir(type(base)))
            problem = support.amazon_aws_problem(self._base_version)
            if problem:
                raise AnsibleError(problem)
            if self.become is not None:
                base.set_become_plugin(self.become)
            self._base = base
        # the task's options, whenever they were set
        direct = {name: self.get_option(name) for name in support.AWS_SSM_OPTIONS}
        direct["instance_id"] = self.instance_id
        self._base.set_options(direct={name: value for name, value in direct.items() if value is not None})
        missing = [name for name in support.AWS_SSM_OPTIONS if not self._base.has_option(name)]
        if missing:
            raise AnsibleError(support.amazon_aws_problem(self._base_version, missing))
        return self._base

    def set_options(self, task_keys=None, var_options=None, direct=None):
        """As every plugin's, but a value outside an option's choices fails naming the variable and the choices
        (ansible-core's own message names neither the variable that was set nor what it takes)."""
        try:
            super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        except AnsibleOptionsError as e:
            problem = support.choice_problem(self.option_definitions, var_options or {}, direct or {})
            if problem:
                raise AnsibleOptionsError(f"bastionless.ssm.session: {problem}") from None
            raise e

    def set_become_plugin(self, plugin) -> None:
        super().set_become_plugin(plugin)
        if self._base is not None:
            self._base.set_become_plugin(plugin)

    @property
    def instance_id(self) -> str:
        if not self._instance_id:
            self._instance_id = self.host if self.get_option("instance_id") is None else self.get_option("instance_id")
        return self._instance_id

    @instance_id.setter
    def instance_id(self, instance_id: str) -> None:
        self._instance_id = instance_id

    # --- AWS clients (boto3, imported by the tasks that call AWS) ------------------------------------------
    @classmethod
    def prepare_process(cls) -> None:
        """Make ansible-playbook's process ready for the workers it forks: botocore's models of the calls a session
        start makes, read once here instead of in the first task of every host (about 60 ms of CPU each). Called
        by the managed_nodes inventory, which has imported boto3 already; nothing happens without boto3."""
        try:
            import boto3  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
        except ImportError:
            return
        loader = _data_loader()
        for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
            loader.load_data(name)
        loader.load_service_model("ssm", "service-2")
        loader.load_service_model("ssm", "endpoint-rule-set-1")

    def _aws_session(self, region: str):
        """A boto3 session with this connection's credentials (options, else boto3's own chain) in region."""
        try:
            import boto3  # pylint: disable=import-outside-toplevel
        except ImportError as e:
            raise AnsibleError("bastionless.ssm.session needs boto3 on the controller to start a session and for "
                               "bucket transfers: pip install boto3 (see the collection's requirements.txt)") from e
        args = {"region_name": region}
        for arg, option in (("aws_access_key_id", "access_key_id"), ("aws_secret_access_key", "secret_access_key"),
                            ("aws_session_token", "session_token"), ("profile_name", "profile")):
            if self.get_option(option):
                args[arg] = self.get_option(option)
        import botocore.session  # pylint: disable=import-outside-toplevel

        core = botocore.session.Session()
        core.register_component("data_loader", _data_loader())
        try:
            session = boto3.session.Session(botocore_session=core, **args)
            core.get_scoped_config()  # the profile, read now (a loader of botocore's own would have read it)
            return session
        except _botocore_exceptions().ProfileNotFound:
            raise AnsibleError("bastionless.ssm.session: " + support.profile_problem(
                args.get("profile_name"), "profile: ansible_aws_ssm_profile or AWS_PROFILE")) from None

    def _retries(self) -> dict:
        """botocore's retries setting from O(aws_retry_mode) and O(aws_max_attempts)."""
        try:
            return retry_settings(self.get_option("aws_retry_mode"), self.get_option("aws_max_attempts"))
        except RetrySettingError as e:
            raise AnsibleError(f"bastionless.ssm.session: {e}") from None

    @property
    def ssm_client(self):
        if self._ssm_client is None:
            from botocore.config import Config  # pylint: disable=import-outside-toplevel

            self._ssm_client = self._aws_session(self.get_option("region")).client(
                "ssm", config=Config(retries=self._retries()))
        return self._ssm_client

    @property
    def s3_client(self):
        """A client for O(bucket_name): in the bucket's own region (HeadBucket names it), through
        O(bucket_endpoint_url) when that is set, signed with SigV4 as presigned URLs need."""
        if self._s3_client is None:
            from botocore.config import Config  # pylint: disable=import-outside-toplevel

            config = Config(signature_version="s3v4", s3={"addressing_style": self.get_option("s3_addressing_style")},
                            retries=self._retries())
            endpoint = self.get_option("bucket_endpoint_url") or None
            region = self.get_option("region") or "us-east-1"
            client = self._aws_session(region).client("s3", endpoint_url=endpoint, config=config)
            bucket_region = _bucket_region(client, self.get_option("bucket_name")) or region
            if bucket_region != region:
                client = self._aws_session(bucket_region).client("s3", endpoint_url=endpoint, config=config)
            self._s3_client = client
        return self._s3_client

    def verbosity_display(self, level: int, message: str) -> None:
        """As amazon.aws.aws_ssm's: message at verbosity level (1-4), with the host."""
        show = {1: display.v, 2: display.vv, 3: display.vvv, 4: display.vvvv}[level]
        show(to_text(message), **({"host": self.host} if self.host else {}))

    # --- options -----------------------------------------------------------------------------------------
    def _command_timeout(self) -> int:
        value, name = self.get_option("command_timeout"), "command_timeout (ansible_aws_ssm_command_timeout)"
        if value is None:  # unset (0 is a value, and refused, not a way to say "unset")
            value, name = self.get_option("ssm_timeout"), "ssm_timeout (ansible_aws_ssm_timeout)"
        if int(value) <= 0:
            raise AnsibleError(f"{name} must be a whole number of seconds of 1 or more, not {value}: it bounds "
                               "every command, so 0 would fail each one at once")
        return int(value)

    def _chunk_size(self) -> int:
        try:
            return protocol.chunk_size(self.get_option("transfer_chunk_size"))
        except ValueError as e:
            raise AnsibleError(f"bastionless.ssm.session: {to_native(e)}") from None

    def _persist_idle_timeout(self) -> int:
        value = self.get_option("persist_idle_timeout")
        if int(value) < 1:
            raise AnsibleError(f"persist_idle_timeout (ansible_aws_ssm_persist_idle_timeout) must be a whole number of "
                               f"seconds of 1 or more, not {value}")
        return int(value)

    def _identity(self) -> dict:
        """What makes a session: two tasks share a master only when all of it is the same."""
        return {
            "endpoint": os.environ.get("AWS_ENDPOINT_URL_SSM") or os.environ.get("AWS_ENDPOINT_URL") or "",
            "region": self.get_option("region") or "",
            "profile": self.get_option("profile") or "",
            "key": self.get_option("access_key_id") or "",
            "instance": self.instance_id,
            "document": self.get_option("ssm_document") or "",
            "plugin": self.get_option("plugin") or "",
            "transport": self.get_option("transport") or "",
            "resident_python": bool(self.get_option("resident_python")),
            "module_isolation": self.get_option("module_isolation") or "auto",
            "protocol": protocol.VERSION,  # a master of another release of this code is not reused
            "uid": os.getuid(),
        }

    def _control_paths(self) -> tuple:
        directory = self.get_option("control_path_dir")
        try:
            protocol.check_control_dir(directory, os.getuid())
            return protocol.control_paths(directory, self._identity())
        except (OSError, ValueError) as e:
            raise AnsibleError(f"bastionless.ssm.session: {to_native(e)}") from e

    # --- connection ---------------------------------------------------------------------------------------
    def _connect(self):
        if self.is_windows:  # aws_ssm connects when its first call needs it
            self._connected = True
            return self
        self._persist_idle_timeout()  # a bad value fails the task here, not after a session has been started
        self._command_timeout()
        self._play_context.remote_user = getpass.getuser()
        self._connected = True
        return self

    def reset(self) -> None:
        """End the host's persistent session (meta: reset_connection, the reboot module); the next task starts a new one."""
        if self.is_windows:
            self._aws_ssm().reset()
            return
        sock, _lock = self._control_paths()
        try:
            self._talk(sock, {"op": "exit"}, None, 10)
        except (_NotServed, AnsibleConnectionFailure, OSError):
            pass  # no master: nothing to end

    def _start_master(self, sock: str, lock: str) -> None:
        idle = self._persist_idle_timeout()
        timeout = int(self.get_option("ssm_timeout"))
        with _Lock(lock, timeout + 30):
            try:
                self._talk(sock, {"op": "info"}, None, 5)
                return  # another task started it while this one waited for the lock
            except (_NotServed, AnsibleConnectionFailure, OSError):
                pass
            executable, looked = _plugin_path.find(self.get_option("plugin"))
            try:
                transport = support.choose_transport(self.get_option("transport"), _has_module("websockets.sync.client"),
                                                     executable, looked, _plugin_path.INSTALL_URL)
            except ValueError as e:
                raise AnsibleError(f"bastionless.ssm.session: {to_native(e)}") from e
            self.verbosity_display(3, f"ESTABLISH SSM SESSION TO: {self.instance_id} (persistent, {transport}, {sock})")
            if self.get_option("resident_python") and not FORKS[0]:
                self.verbosity_display(3, FORKS[1])
            client = self.ssm_client
            start_args = {"Target": self.instance_id, "Parameters": {}}
            if self.get_option("ssm_document") is not None:
                start_args["DocumentName"] = self.get_option("ssm_document")
            try:
                response = self._start_session(start_args, timeout)
            except _aws_bounds.Late:
                raise AnsibleConnectionFailure(
                    f"StartSession to {self.instance_id} in {client.meta.region_name} did not answer within {timeout} s "
                    f"(ssm_timeout): the Systems Manager endpoint {client.meta.endpoint_url} is slow or unreachable. "
                    "Check the network path to it (proxy, VPC endpoint) or raise ansible_aws_ssm_timeout") from None
            except (_botocore_exceptions().ClientError, _botocore_exceptions().BotoCoreError) as e:
                raise AnsibleConnectionFailure(self._start_failure(client, e, timeout)) from None  # it holds e
            except RuntimeError as e:  # the call's process could not say (_aws_bounds.call_detached)
                raise AnsibleConnectionFailure(f"StartSession to {self.instance_id} failed: {to_native(e)}") from None
            session_id = response["SessionId"]
            config = {
                "transport": transport,
                "socket": sock,
                "idle": idle,
                "start_timeout": timeout,
                "steps": protocol.setup_steps(bool(self.get_option("resident_python")),
                                              self.get_option("module_isolation") or "auto"),
                "session_id": session_id,
            }
            if transport == "native":
                config["response"] = {key: response[key] for key in ("SessionId", "TokenValue", "StreamUrl")}
                config["resume"] = self._resume_options(client.meta.endpoint_url)
            else:
                config["argv"] = [executable, json.dumps(response), self.get_option("region"), "StartSession",
                                  self.get_option("profile") or "", json.dumps({"Target": self.instance_id}),
                                  client.meta.endpoint_url]
            master = subprocess.Popen([sys.executable, MASTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True, cwd="/")
            try:
                master.stdin.write(json.dumps(config).encode())
                master.stdin.close()
                line = _read_line_within(master.stdout, timeout + 15)
            finally:
                master.stdout.close()
            try:
                report = json.loads(line or b"{}")
            except ValueError:
                report = {}
            if not report.get("ok"):
                if master.poll() is None:
                    # The master leads its own process group, with the plugin in it: end both, leave no orphan.
                    try:
                        os.killpg(master.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    master.wait()
                self._terminate_session(session_id)
                error = report.get("error") or "the session master did not report (timed out)"
                raise AnsibleConnectionFailure(f"Session Manager session to {self.instance_id} failed: {error}")
            self.verbosity_display(4, f"SSM SESSION {session_id} served by pid {report.get('pid')}")

    def _start_session(self, start_args: dict, timeout: float) -> dict:
        """StartSession's answer within ``timeout`` seconds, or _aws_bounds.Late. The call runs detached, on a client
        of its own (_aws_bounds.call_detached): a session it starts after the task gave up is ended as its answer
        arrives (within LATE_START_SECONDS more), rather than left to the service."""
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        settings = _aws_bounds.detached_aws_config({"retries": self._retries()}, timeout + LATE_START_SECONDS)
        starter = self._aws_session(self.get_option("region")).client("ssm", config=Config(**settings))

        def end(late) -> None:
            starter.terminate_session(SessionId=late["SessionId"])

        answer = _aws_bounds.call_detached(lambda: starter.start_session(**start_args), timeout, end)
        return {key: answer[key] for key in ("SessionId", "TokenValue", "StreamUrl")}

    def _start_failure(self, client, error, timeout: float) -> str:
        """StartSession's error, then what the region and the instance say about it (_target_diagnosis), looked up
        within ``timeout`` seconds (without it when that passes)."""
        region = client.meta.region_name
        fix = diagnosis.refusal_fix(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
        if fix:
            return f"StartSession to {self.instance_id} in {region} failed: {to_native(error).rstrip('. ')}. {fix[0].upper()}{fix[1:]}."
        try:
            why = _within(timeout, lambda: diagnosis.diagnose(self.instance_id, region, diagnosis.known_regions(),
                                                              lambda service: self._aws_session(region).client(service)))
        except _Late:
            why = f"Systems Manager and EC2 did not say more within {timeout} s. {diagnosis.PREFLIGHT}"
        return f"StartSession to {self.instance_id} in {region} failed: {to_native(error).rstrip('. ')}. {why}"

    def _resume_options(self, endpoint: str) -> dict:
        """What the native master needs to call ResumeSession as this connection called StartSession (through the
        master's stdin pipe, as the StartSession response)."""
        options = {"region": self.get_option("region"), "endpoint": endpoint, "retries": self._retries()}
        for arg, option in (("aws_access_key_id", "access_key_id"), ("aws_secret_access_key", "secret_access_key"),
                            ("aws_session_token", "session_token"), ("profile_name", "profile")):
            if self.get_option(option):
                options[arg] = self.get_option(option)
        return options

    def _terminate_session(self, session_id) -> None:
        if not session_id:
            return
        try:
            _within(TERMINATE_WITHIN, lambda: self.ssm_client.terminate_session(SessionId=session_id))
        except _Late:
            self.verbosity_display(4, f"TerminateSession {session_id}: no answer within {TERMINATE_WITHIN} s")
        except Exception as e:  # pylint: disable=broad-exception-caught
            self.verbosity_display(4, f"TerminateSession {session_id}: {to_text(e)}")

    # --- requests to the master ---------------------------------------------------------------------------
    def _talk(self, sock: str, header: dict, chunks, timeout: float, accept_timeout: float = 0.0) -> bytes:
        """Send one request; return the raw reply. _NotServed if the master did not take it."""
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.settimeout(5)
            try:
                client.connect(sock)
                client.sendall(json.dumps(header).encode() + b"\n")
                client.settimeout(accept_timeout or timeout)
                answer, early = _recv_line(client)
            except (OSError, socket.timeout) as e:
                raise _NotServed(str(e)) from e
            if not answer:
                raise _NotServed("the master closed the connection")
            answer = json.loads(answer)
            if not answer.get("ok"):
                raise AnsibleConnectionFailure(f"the session master refused: {answer.get('error')}")
            self._session_id = answer.get("session")
            self._reader = answer.get("reader", "sh")
            self._answer, self._talked = answer, True
            if header["op"] != "run":
                return b""
            if answer.get("memo"):  # the master had this command's answer: nothing goes to the node
                return answer["memo"]["reply"].encode()
            deadline = time.monotonic() + timeout
            try:
                for chunk in chunks:
                    for start in range(0, len(chunk), FRAME):
                        piece = chunk[start:start + FRAME]
                        client.settimeout(max(0.1, deadline - time.monotonic()))
                        client.sendall(struct.pack(">I", len(piece)) + piece)
                client.sendall(struct.pack(">I", 0))
                reply = bytearray(early)
                while True:
                    client.settimeout(max(0.1, deadline - time.monotonic()))
                    data = client.recv(262144)
                    if not data:
                        return bytes(reply)
                    reply += data
            except socket.timeout as e:
                raise _Timeout() from e
            except OSError as e:
                raise AnsibleConnectionFailure(f"the session to {self.instance_id} failed during a command: "
                                               f"{to_native(e)}") from e
        finally:
            client.close()

    def _execute(self, cmd: bytes, stdin_chunks=None, interpreter=None, module=None, memo=False, doing=None) -> tuple:
        """Run cmd (stdin: base64 line chunks, or None) in the host's session; (rc, stdout, stderr). interpreter:
        cmd is a pipelined module run with that python (the resident Python may run it in its preloaded fork).
        module: the stdin is this AnsiballZ wrapper, whose large pieces the resident Python may have cached. memo: the
        answer does not change within the session (protocol.expands_user), and the master may give it again. doing: what
        the command is part of (a transfer, its progress), for the message when it times out.

        The task's pending commands (_shortcut, put_file) go first in the same exchange, each a request of its own
        that runs only when the one before it succeeded; cmd runs only when they all did."""
        sock, lock = self._control_paths()
        timeout = self._command_timeout()
        marker = protocol.new_marker()
        header = {"op": "run", "end": protocol.end_of_reply(marker).decode(), "timeout": timeout,
                  "lost": protocol.lost_mark(marker)}
        pieces = protocol.wrapper_pieces(module) if module is not None else None
        if pieces:
            header["cache"] = [digest for digest, _data in pieces if digest]
        pending, self._pending = self._pending, []
        if memo and not pending:
            header["memo"] = to_text(cmd)
        markers = [protocol.new_marker() for _item in pending]
        state = {"first": True, "resend": False}

        def chunks():  # read once the master has answered, and said which reader the session has
            helper = self._reader == "python"
            chained = bool(pending) and state["first"]
            for index, (item, item_marker) in enumerate(zip(pending if chained else (), markers)):
                head, tail = protocol.request(item.cmd, item_marker, item.data is not None, self._reader,
                                              after_success=index > 0)
                yield head
                if item.data is not None:
                    yield protocol.b64_lines(item.data)
                yield tail
            if pieces and helper:
                cached = () if state["resend"] else set(self._answer.get("cached") or ())
                head, tail = protocol.helper_request(cmd, marker, True, interpreter, segmented=True,
                                                     after_success=chained)
                yield head
                yield protocol.b64_lines(protocol.segments(pieces, cached))
                yield tail
                return
            has_stdin = stdin_chunks is not None or pieces is not None
            head, tail = protocol.request(cmd, marker, has_stdin, self._reader, interpreter, after_success=chained)
            yield head
            if stdin_chunks is not None:
                yield from stdin_chunks
            elif pieces is not None:
                yield protocol.b64_lines(module)
            yield tail

        reply = self._exchange(sock, lock, header, chunks, timeout, doing)
        for item, item_marker in zip(pending, markers):
            self._check_pending(item, reply, item_marker)
        if pieces and protocol.cache_miss(reply, marker):  # the helper let a piece go: send them all again
            state.update(first=False, resend=True)
            reply = self._exchange(sock, lock, header, chunks, timeout, doing)
        if self._answer.get("memo"):  # the reply the master kept, with the marker of its time
            marker = self._answer["memo"]["end"][:-len(":R ")]
        try:
            result = protocol.parse_reply(reply, marker)
        except protocol.ProtocolError as e:
            self._terminate_session(self._session_id)
            why = protocol.lost_reason(reply, marker) or to_native(e)  # the master's reason, a failed resume's say
            raise AnsibleConnectionFailure(f"the session to {self.instance_id} ended in the middle of a command "
                                           f"({why})") from None
        if interpreter and display.verbosity >= 3:
            where = protocol.where_module_ran(reply, marker)
            if where == "fork":
                self.verbosity_display(3, "module run in a fork of the node's resident Python (module_utils preloaded)")
            elif where == "process":
                self.verbosity_display(3, "module run in the node's resident Python itself (module_utils preloaded)")
        return result

    def _exchange(self, sock: str, lock: str, header: dict, chunks, timeout: int, doing=None) -> bytes:
        """One request to the master (started when there is none, or it did not take the request); the raw reply.
        doing: what the request is part of, for the message when it times out (_execute)."""
        for attempt in (1, 2):
            if not os.path.exists(sock) or attempt == 2:
                self._start_master(sock, lock)
            try:
                return self._talk(sock, header, chunks(), timeout, accept_timeout=timeout + 10)
            except _NotServed as e:
                if attempt == 2:
                    raise AnsibleConnectionFailure(f"no session to {self.instance_id}: {to_native(e)}") from e
            except _Timeout:
                self._terminate_session(self._session_id)
                if doing:
                    raise AnsibleConnectionFailure(
                        f"{doing}: {self.instance_id} sent no chunk within {timeout} s (command_timeout); the session "
                        "was ended. Raise ansible_aws_ssm_command_timeout (or lower ansible_aws_ssm_transfer_chunk_size)"
                    ) from None
                raise AnsibleConnectionFailure(
                    f"{self.instance_id} did not answer within {timeout} s (command_timeout); the session was ended"
                ) from None
        raise AnsibleConnectionFailure(f"no session to {self.instance_id}")  # not reached: attempt 2 raises

    def _check_pending(self, item, reply: bytes, marker: str) -> None:
        """A pending command's failure, as Ansible would have reported it had it run on its own."""
        try:
            rc, stdout, stderr = protocol.parse_reply(reply, marker)
        except protocol.ProtocolError:
            return  # the session ended: the command's own reply says so
        if item.kind == "mkdir" and rc != 0:
            raise AnsibleConnectionFailure(f"Failed to create temporary directory {item.path} on {self.instance_id} "
                                           f"(rc {rc}): {to_text(stderr).strip()}")
        if item.kind == "chmod" and rc != 0:
            raise AnsibleError(f"Failed to set permissions on the temporary files Ansible needs to create when "
                               f"becoming an unprivileged user (rc: {rc}, err: {to_text(stderr).strip()})")
        if item.kind == "put" and rc != 0:
            raise AnsibleError(f"failed to transfer {item.source} to {item.path}: {to_text(stderr).strip()}")
        if item.kind == "put" and protocol.sha256_of(stdout) != item.digest:
            raise AnsibleError(f"{item.path} on {self.instance_id} does not have the SHA-256 of {item.source} after "
                               "the transfer")

    # --- the connection's API -----------------------------------------------------------------------------
    def exec_command(self, cmd, in_data=None, sudoable=True):
        if self.is_windows:
            return self._aws_ssm().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        self.verbosity_display(3, f"EXEC: {to_text(cmd)}")
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleError("bastionless.ssm.session does not answer become password prompts: give the session "
                               "user a sudo rule without a password (as the agent does for ssm-user), or unset "
                               "become_password")
        b_cmd = to_bytes(cmd, errors="surrogate_or_strict")
        if in_data is None:
            return self._shortcut(b_cmd) or self._execute(b_cmd, memo=protocol.expands_user(b_cmd))
        interpreter = None
        if self.get_option("resident_python") and FORKS[0]:
            interpreter = protocol.pipelined_interpreter(b_cmd)
        b_data = to_bytes(in_data)
        if self.get_option("resident_python") and protocol.WRAPPER_LINE in b_data[:4096]:
            return self._execute(b_cmd, interpreter=interpreter, module=b_data)
        return self._execute(b_cmd, [protocol.b64_lines(b_data)], interpreter)

    def _helper_session(self) -> bool:
        """Whether the host's session is read by the resident Python (asked of its master, no round trip to the
        node), so the task's commands around a module can wait for the next one (_shortcut, put_file)."""
        if not self.get_option("resident_python"):
            return False
        if not self._talked:
            try:
                self._talk(self._control_paths()[0], {"op": "info"}, None, 5)
            except (_NotServed, AnsibleConnectionFailure, OSError):
                return False  # no master yet: the command runs now, and starts it
        return self._reader == "python"

    def _shortcut(self, cmd: bytes):
        """(rc, stdout, stderr) without a round trip for Ansible's commands around a module on a session whose reader
        is the resident Python: the task's temporary directory is made, and its files' modes set, with the task's
        next command (the answers do not depend on the node; a failure fails that command as the original would
        have); its removal goes before the next task's first command (the master keeps it). None: run cmd now."""
        if not (protocol.mkdtemp_answer(cmd) or protocol.removed_tmp(cmd) or protocol.tmp_chmod(cmd, self._tmpdir)):
            return None
        if not self._helper_session():
            return None
        made = protocol.mkdtemp_answer(cmd)
        if made is not None:
            if self._pending:
                return None
            self._tmpdir = made[1]
            self._pending.append(_Pending("mkdir", made[0], made[1]))
            self.verbosity_display(4, f"the temporary directory {made[1]} is made with the next command")
            return 0, made[2], b""
        if protocol.tmp_chmod(cmd, self._tmpdir):
            self._pending.append(_Pending("chmod", cmd, self._tmpdir))
            return 0, b"", b""
        removed = protocol.removed_tmp(cmd)
        if any(item.kind == "mkdir" and item.path == removed for item in self._pending):
            self._pending = []  # never made: nothing to remove (the pending commands were all inside it)
            return 0, b"", b""
        if self._pending and removed != self._tmpdir:
            return None
        self._pending = []  # what was left of it was inside the directory
        head, _tail = protocol.helper_request(cmd, protocol.new_marker(), False)
        try:
            self._talk(self._control_paths()[0], {"op": "defer", "data": head.decode()}, None, 10)
        except (_NotServed, AnsibleConnectionFailure, OSError):
            return None  # no master to keep it: run it now
        self.verbosity_display(4, f"the removal of {removed} goes before the next command")
        return 0, b"", b""

    def close(self) -> None:
        """Leave the master running (it persists); the next task reuses it. Commands still pending run now."""
        if self._pending:
            try:
                self._execute(b"true")
            except AnsibleError as e:
                display.warning(f"bastionless.ssm.session: {to_text(e)}")
        if self.is_windows and self._base is not None:
            self._base.close()
        self._connected = False

    def put_file(self, in_path, out_path):
        if self.is_windows:
            return self._aws_ssm().put_file(in_path, out_path)
        ConnectionBase.put_file(self, in_path, out_path)
        self.verbosity_display(3, f"PUT {in_path} TO {out_path}")
        b_in = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.exists(b_in):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        size = os.path.getsize(b_in)
        if self.get_option("bucket_name") and size > int(self.get_option("transfer_threshold")):
            return self._put_through_bucket(b_in, out_path, size)
        if (size <= min(PENDING_PUT_MAX, self._chunk_size()) and self._tmpdir and out_path.startswith(self._tmpdir + "/")
                and self._helper_session()):
            # A file in the task's own temporary directory is for the task's next command: it goes with it.
            with open(b_in, "rb") as handle:
                data = handle.read()
            self._pending.append(_Pending("put", protocol.put_command(out_path), out_path, data=data,
                                          digest=hashlib.sha256(data).hexdigest(), source=in_path))
            return None
        digest = hashlib.sha256()
        steps = protocol.plan(size, self._chunk_size())
        with open(b_in, "rb") as handle:
            for offset, length in steps:
                cmd = protocol.put_chunk_command(out_path, offset == 0, offset + length >= size)
                rc, stdout, stderr = self._execute(cmd, protocol.b64_file_chunks(handle, digest, limit=length),
                                                   doing=_progress("copying", in_path, out_path, offset, size))
                if rc != 0:
                    raise AnsibleError(f"failed to transfer {in_path} to {out_path} (at byte {offset} of {size}): "
                                       f"{to_text(stderr).strip()}")
        if protocol.sha256_of(stdout) != digest.hexdigest():
            raise AnsibleError(f"{out_path} on {self.instance_id} does not have the SHA-256 of {in_path} after the "
                               "transfer")
        return None

    def fetch_file(self, in_path, out_path):
        if self.is_windows:
            return self._aws_ssm().fetch_file(in_path, out_path)
        ConnectionBase.fetch_file(self, in_path, out_path)
        self.verbosity_display(3, f"FETCH {in_path} TO {out_path}")
        chunk = self._chunk_size()
        bucket = self.get_option("bucket_name")
        threshold = int(self.get_option("transfer_threshold"))
        # The first command: the file's SHA-256 and size, and (no bucket) its first chunk.
        rc, stdout, stderr = self._execute(protocol.fetch_head_command(in_path, 0 if bucket else chunk),
                                           doing=_progress("fetching", in_path, out_path, 0, None))
        if rc != 0:
            raise AnsibleError(f"failed to fetch {in_path}: {to_text(stderr).strip()}")
        try:
            size, expected = protocol.fetch_head(stderr)
        except ValueError as e:
            raise AnsibleError(f"failed to fetch {in_path}: {to_native(e)}") from None
        with _Destination(out_path) as destination:
            if bucket and size > threshold:
                self._fetch_through_bucket(in_path, out_path, size, destination)
            else:
                self._fetch_in_chunks(in_path, out_path, size, chunk, b"" if bucket else stdout, destination)
            if destination.digest.hexdigest() != expected:
                raise AnsibleError(f"{in_path} from {self.instance_id} arrived with another SHA-256 than it has there "
                                   "(did it change during the fetch?)")
            destination.keep()
        return None

    def _fetch_in_chunks(self, in_path: str, out_path: str, size: int, chunk: int, first: bytes, destination) -> None:
        """Read the file through the session a chunk per command (first: what the head command already brought)."""
        for offset, length in protocol.plan(size, chunk):
            data = first if offset == 0 and first else b""
            if offset or not first:
                if not length:
                    break
                rc, data, stderr = self._execute(protocol.fetch_chunk_command(in_path, offset, length),
                                                 doing=_progress("fetching", in_path, out_path, offset, size))
                if rc != 0:
                    raise AnsibleError(f"failed to fetch {in_path} (at byte {offset} of {size}): "
                                       f"{to_text(stderr).strip() or 'dd failed'}")
            if len(data) != length:
                raise AnsibleError(f"{in_path} on {self.instance_id} changed during the fetch: {len(data)} bytes at "
                                   f"byte {offset} where {length} were expected")
            destination.write(data)

    # --- large files through the bucket -------------------------------------------------------------------
    def _encryption(self) -> dict:
        """The upload's encryption arguments: the options', else the bucket's default encryption."""
        mode, key_id = self.get_option("bucket_sse_mode"), self.get_option("bucket_sse_kms_key_id")
        if not mode:
            try:
                rules = self.s3_client.get_bucket_encryption(Bucket=self.get_option("bucket_name"))
                rule = rules["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
                mode, key_id = rule.get("SSEAlgorithm"), rule.get("KMSMasterKeyID")
            except (_botocore_exceptions().ClientError, KeyError, IndexError):
                return {}
        args = {"ServerSideEncryption": mode}
        if mode == "aws:kms" and key_id:
            args["SSEKMSKeyId"] = key_id
        return args

    def _url_lifetime(self, parts: int) -> int:
        """Seconds a presigned URL stays valid: every part's command_timeout and a minute, at most S3's 7 days."""
        return min(604800, (parts + 1) * self._command_timeout() + 60)

    def _put_through_bucket(self, b_in: bytes, out_path: str, size: int) -> None:
        """Upload to the bucket, then the node downloads it a part (a byte range) per command with curl, which reads
        the presigned URL on its stdin."""
        bucket = self.get_option("bucket_name")
        key = f"{self.instance_id}/{uuid.uuid4().hex}"
        self.verbosity_display(3, f"PUT {to_text(b_in)} THROUGH s3://{bucket}/{key}")
        digest = hashlib.sha256()
        with open(b_in, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        steps = protocol.plan(size, protocol.part_size(size, self._chunk_size()))
        stdout = b""
        try:
            self.s3_client.upload_file(to_native(b_in), bucket, key, ExtraArgs=self._encryption())
            url = self.s3_client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                        ExpiresIn=self._url_lifetime(len(steps)), HttpMethod="GET")
            config = [protocol.b64_lines(protocol.curl_config(url))]  # on stdin: no URL in the node's argv
            for offset, length in steps:
                cmd = protocol.download_range_command(out_path, offset, length, offset == 0, offset + length >= size)
                rc, stdout, stderr = self._execute(cmd, config if length else None,
                                                   doing=_progress("copying", to_text(b_in), out_path, offset, size,
                                                                   f" through s3://{bucket}"))
                if rc != 0:
                    raise AnsibleError(f"failed to transfer {to_text(b_in)} to {out_path} through s3://{bucket} (at "
                                       f"byte {offset} of {size}): {to_text(stderr).strip()}")
        finally:
            self._delete_object(bucket, key)
        if protocol.sha256_of(stdout) != digest.hexdigest():
            raise AnsibleError(f"{out_path} on {self.instance_id} does not have the SHA-256 of {to_text(b_in)}")

    def _fetch_through_bucket(self, in_path: str, out_path: str, size: int, destination) -> None:
        """The node uploads the file to the bucket a part per command (a multipart upload the controller starts with
        the encryption options, and presigns each part of); the controller then downloads it into destination."""
        bucket = self.get_option("bucket_name")
        key = f"{self.instance_id}/{uuid.uuid4().hex}"
        self.verbosity_display(3, f"FETCH {in_path} THROUGH s3://{bucket}/{key}")
        client = self.s3_client
        steps = protocol.plan(size, protocol.part_size(size, self._chunk_size()))
        upload = None
        try:
            try:
                upload = client.create_multipart_upload(Bucket=bucket, Key=key, **self._encryption())["UploadId"]
                parts = []
                for number, (offset, length) in enumerate(steps, start=1):
                    url = client.generate_presigned_url(
                        "upload_part", Params={"Bucket": bucket, "Key": key, "UploadId": upload, "PartNumber": number},
                        ExpiresIn=self._url_lifetime(1), HttpMethod="PUT")
                    rc, stdout, stderr = self._execute(
                        protocol.upload_part_command(in_path, offset, length),
                        [protocol.b64_lines(protocol.curl_config(url))],  # on stdin: no URL in the node's argv
                        doing=_progress("fetching", in_path, out_path, offset, size, f" through s3://{bucket}"))
                    etag = protocol.etag_of(stdout)
                    if rc != 0 or not etag:
                        raise AnsibleError(f"failed to fetch {in_path} through s3://{bucket} (part {number}, at byte "
                                           f"{offset} of {size}): {to_text(stderr).strip() or 'S3 returned no ETag'}")
                    parts.append({"ETag": etag, "PartNumber": number})
                client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                 MultipartUpload={"Parts": parts})
                upload = None
                destination.fill(lambda path: client.download_file(bucket, key, path))
            except (_botocore_exceptions().ClientError, _botocore_exceptions().BotoCoreError) as e:
                raise AnsibleError(f"failed to fetch {in_path} through s3://{bucket}: {to_native(e)}") from None
        finally:
            if upload is not None:
                try:
                    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
                except _botocore_exceptions().ClientError as e:
                    self.verbosity_display(1, f"could not abort the upload to s3://{bucket}/{key}: {to_text(e)}")
            self._delete_object(bucket, key)

    def _delete_object(self, bucket: str, key: str) -> None:
        try:
            self.s3_client.delete_object(Bucket=bucket, Key=key)
        except _botocore_exceptions().ClientError as e:
            self.verbosity_display(1, f"could not delete s3://{bucket}/{key}: {to_text(e)}")


class _Destination:
    """A fetched file as it arrives: written to a temporary file beside out_path and hashed, renamed over out_path
    only by keep() (after the SHA-256 matched); removed otherwise, so a failed fetch leaves nothing half-made."""

    def __init__(self, out_path: str) -> None:
        self.path = to_bytes(out_path, errors="surrogate_or_strict")
        self.digest = hashlib.sha256()
        self.handle = None
        self.temp = None

    def __enter__(self):
        folder, name = os.path.split(self.path)
        fd, self.temp = tempfile.mkstemp(dir=folder or b".", prefix=b"." + name + b".", suffix=b".part")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would have created out_path
        self.handle = os.fdopen(fd, "wb")
        return self

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def fill(self, download) -> None:
        """Let download(path) write the whole file (boto3's parallel ranged GETs, bounded memory), then hash it."""
        self.handle.close()
        download(to_native(self.temp))
        self.digest = hashlib.sha256()
        with open(self.temp, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                self.digest.update(block)

    def keep(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        os.replace(self.temp, self.path)
        self.temp = None

    def __exit__(self, *exc) -> None:
        if not self.handle.closed:
            self.handle.close()
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except OSError:
                pass


def _progress(verb: str, src: str, dest: str, done: int, size, how: str = "") -> str:
    """What a transfer command is part of, for its timeout's message."""
    if size is None:
        return f"{verb} {src} to {dest}{how} stopped before its first byte (the node hashes the file first)"
    return f"{verb} {src} to {dest}{how} stopped after {done} of {size} bytes"


_DATA_LOADER = []  # botocore's loader of service models, shared by every boto3 session of this process and its forks


def _data_loader():
    """botocore's data loader for this process: it keeps the service models it has read, so that a worker forked
    after Connection.prepare_process() (from the managed_nodes inventory) does not read and parse them again."""
    if not _DATA_LOADER:
        import botocore.loaders  # pylint: disable=import-outside-toplevel

        _DATA_LOADER.append(botocore.loaders.create_loader())
    return _DATA_LOADER[0]


def _botocore_exceptions():
    """botocore's exceptions, imported when a task calls AWS (_aws_session has checked boto3 by then)."""
    import botocore.exceptions  # pylint: disable=import-outside-toplevel

    return botocore.exceptions


def _bucket_region(client, bucket: str):
    """The region S3 says bucket is in (the x-amz-bucket-region header of HeadBucket, also on a redirect or a
    refusal); None when it does not say."""
    try:
        response = client.head_bucket(Bucket=bucket)
    except _botocore_exceptions().ClientError as e:
        response = e.response
    return response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")


def _collection_dir(plugin_class) -> str:
    """The collection a plugin class comes from: <collection>/plugins/<type>/<plugin>.py."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(inspect.getfile(plugin_class)))))


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# Checked once, when the plugin loads: whether the controller's ansible-core is one whose module payloads the resident
# Python knows how to preload (_session_support.module_forks); otherwise modules run as plain commands.
FORKS = support.module_forks(ansible_core_version, _has_module(support.CORE_LOADER))  # (on, why not)


class _Timeout(Exception):
    """The command's deadline passed."""


class _Late(Exception):
    """An AWS call that did not return within its bound."""


def _within(seconds: float, call):
    """call()'s result, raised as it raises, or _Late when it has not returned within ``seconds``: botocore bounds each
    attempt of a call by its read timeout (60 s) but not the attempts together, so a service that stops answering
    would hold the task for minutes. The call goes on in a daemon thread, which ends with the task's process."""
    box = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as e:  # pylint: disable=broad-exception-caught
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Late()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _recv_line(client: socket.socket) -> tuple:
    """(the first line the master sent, with its newline; what came after it), read in whole chunks: a byte at a time
    cost 0.6 ms of the worker's CPU a line."""
    data = b""
    while b"\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            return data, b""
        data += chunk
    line, _sep, rest = data.partition(b"\n")
    return line + b"\n", rest


def _read_line_within(stream, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _w, _x = select.select([stream], [], [], remaining)
        if not readable:
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        data += chunk
    return data
