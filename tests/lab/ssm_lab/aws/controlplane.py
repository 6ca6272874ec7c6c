"""The lab's control plane: moto's server behind a front that adds what moto lacks.

One process serves, on one loopback HTTP port, every AWS API the collection calls (moto, plus the SSM
actions of ``ssmapi``), the lab's own admin API under ``/_lab/``, and, on a second port, the message channel
that agents connect out to and session-manager-plugin connects in to.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
from xml.etree import ElementTree
from xml.sax.saxutils import escape

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.backends import get_backend  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

from .. import common  # noqa: E402
from ..nodes import agent_package as nodepkg  # noqa: E402
from . import authz, cloudtrail, iamsim, prefs, refusals, service_authz  # noqa: E402
from .instance_connect import InstanceConnect  # noqa: E402
from .messages import MessageServer  # noqa: E402
from .registry import Node, Registry  # noqa: E402
from .associations import Associations  # noqa: E402
from .ssmapi import ApiError, SsmApi  # noqa: E402

log = logging.getLogger("ssm_lab.controlplane")
REBOOT_SECONDS = 2.0  # how long a rebooting node is away before its init runs
SHUTDOWN_SECONDS = 1.0  # from a reboot command inside a node to the node going down


class LabApp:
    """WSGI front: faults, the SSM extensions, fixes to moto, the admin API; the rest goes to moto."""

    def __init__(self, registry: Registry, messages: MessageServer, endpoint: str) -> None:
        self.registry = registry
        self.messages = messages
        self.endpoint = endpoint
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.ssm = SsmApi(registry, messages, endpoint)
        self.associations = Associations(self.ssm)
        self.instance_connect = InstanceConnect(registry.account_id, registry.region)

    # --- WSGI ----------------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_lab/"):
            return self.admin(environ, start_response)
        if path.startswith(f"/amazon-ssm-{self.registry.region}/") and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return self._distribution(path.split("/", 2)[2], environ, start_response)
        body = self._body(environ)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        service = self._service(environ)
        faults = self.registry.faults
        # The lab's own calls (its set-up, transcripts, command output) are not the code under test: no faults.
        internal = common.INTERNAL_USER_AGENT in environ.get("HTTP_USER_AGENT", "")
        delay = 0 if internal else faults.s3_delay if service == "s3" else faults.api_delay
        if delay:
            time.sleep(delay)
        action = target.split(".", 1)[1] if "." in target else self._query_action(body, environ)
        self.registry.count_call(f"{service}:{action}", self._signed_region(environ))
        if (service != "s3" and not internal and faults.expired_session_tokens
                and environ.get("HTTP_X_AMZ_SECURITY_TOKEN")):
            return self._expired(target, start_response)
        if service != "s3" and not internal and faults.throttled():
            self.registry.count_throttled(f"{service}:{action}")
            return self._throttle(service, target, start_response)
        refused = refusals.refuse(service, action, target, body, self._signed_region(environ), self.registry.account_id,
                                  self.registry.region)
        if refused is not None:
            status, kind, data = refused
            reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found"}[status]
            start_response(f"{status} {reason}", [("Content-Type", kind), ("Content-Length", str(len(data)))])
            return [data]
        if service == "s3" or target.startswith("Logs_"):
            refused = self._authorize_read(service, target, body, environ, start_response)
            if refused is not None:
                return refused
        if target.startswith("AmazonSSM."):
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = {}
            if self.associations.handles(action):
                handler = self.associations.handler(action)

                def judged(body: dict, authorization: str, handler=handler):
                    self.ssm.authorize(action, body, authorization)
                    return handler(body, authorization)

                return self._ssm_call(action, request, environ, start_response, judged)
            if self.ssm.handles(action, request):
                return self._ssm_call(action, request, environ, start_response)
        if target == "AWSEC2InstanceConnectService.SendSSHPublicKey":
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = {}
            return self._ssm_call(action, request, environ, start_response, self._send_ssh_public_key)
        if target == "ResourceGroupsTaggingAPI_20170126.GetResources":
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = {}
            types = request.get("ResourceTypeFilters") or []
            if types and all(t == "ssm:managed-instance" for t in types):
                return self._ssm_call(action, request, environ, start_response, self.ssm.tagging_get_resources)
        if service == "ec2" and action == "ModifyVpcEndpoint":
            return self._modify_vpc_endpoint(body, environ, start_response)
        if service == "ec2" and action == "RunInstances":
            return self._run_instances(body, environ, start_response)
        if service == "ec2" and action in ("RebootInstances", "StopInstances", "StartInstances"):
            return self._power(action, body, environ, start_response)
        if service == "ec2" and action == "ReplaceIamInstanceProfileAssociation":
            return self._replace_profile_association(body, environ, start_response)
        if service == "iam" and action == "SimulatePrincipalPolicy":
            return self._simulate_principal_policy(body, environ, start_response)
        return self.moto(environ, start_response)

    @staticmethod
    def _body(environ) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        stream = environ["wsgi.input"]
        if length:
            body = stream.read(length)
        elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return body

    @staticmethod
    def _service(environ) -> str:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if "Credential=" in auth:
            try:
                return auth.split("Credential=", 1)[1].split("/")[3]
            except IndexError:
                return ""
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        credential = (query.get("X-Amz-Credential") or [""])[0]
        if credential:
            parts = credential.split("/")
            return parts[3] if len(parts) > 3 else ""
        return "s3" if environ.get("REQUEST_METHOD") in ("GET", "PUT", "HEAD", "DELETE") else ""

    @staticmethod
    def _query_action(body: bytes, environ) -> str:
        if body and b"Action=" in body[:4096]:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            return (form.get("Action") or [""])[0]
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        return (query.get("Action") or [environ.get("REQUEST_METHOD", "")])[0]

    def _expired(self, target: str, start_response):
        """The expired_session_tokens fault: AWS's answer to temporary credentials whose session token has expired."""
        message = "The security token included in the request is expired"
        if target:
            return self._json(start_response, 400, {"__type": "ExpiredTokenException", "message": message},
                              {"x-amzn-ErrorType": "ExpiredTokenException"})
        xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code><Message>{message}</Message>"
               "</Error><RequestId>lab</RequestId></ErrorResponse>")
        start_response("403 Forbidden", [("Content-Type", "text/xml")])
        return [xml.encode()]

    def _throttle(self, service: str, target: str, start_response):
        if target:
            return self._json(start_response, 400, {"__type": "ThrottlingException", "message": "Rate exceeded"},
                              {"x-amzn-ErrorType": "ThrottlingException"})
        code = "RequestLimitExceeded" if service == "ec2" else "Throttling"
        xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>Rate exceeded</Message>"
               f"</Error><RequestId>lab</RequestId></ErrorResponse>")
        if service == "ec2":
            xml = (f"<Response><Errors><Error><Code>{code}</Code><Message>Request limit exceeded.</Message></Error>"
                   f"</Errors><RequestID>lab</RequestID></Response>")
        start_response("503 Service Unavailable" if service == "ec2" else "400 Bad Request",
                       [("Content-Type", "text/xml")])
        return [xml.encode()]

    def _ssm_call(self, action: str, request: dict, environ, start_response, handler=None):
        try:
            if handler is not None:
                result = handler(request, environ.get("HTTP_AUTHORIZATION", ""))
            else:
                result = self.ssm.call(action, request, environ.get("HTTP_AUTHORIZATION", ""))
        except ApiError as error:
            return self._json(start_response, error.status, {"__type": error.code, "message": error.message},
                              {"x-amzn-ErrorType": error.code})
        return self._json(start_response, 200, result)

    def _send_ssh_public_key(self, body: dict, authorization: str) -> dict:
        """EC2 Instance Connect's SendSSHPublicKey, for an IAM caller only when its policies allow
        ec2-instance-connect:SendSSHPublicKey on the instance (its tags as aws:ResourceTag/KEY and ec2:ResourceTag/KEY,
        the OS user as ec2:osuser)."""
        region = self._region({"HTTP_AUTHORIZATION": authorization})
        instance_id = str(body.get("InstanceId", ""))
        tags = get_backend("ec2")[self.registry.account_id][region].tags.get(instance_id, {})
        context = {"ec2:osuser": [str(body.get("InstanceOSUser", ""))]}
        for key, value in tags.items():
            context[f"aws:ResourceTag/{key}"] = context[f"ec2:ResourceTag/{key}"] = [value]
        arn = authz.node_arn(authz.partition_of(region), region, self.registry.account_id, instance_id)
        self.ssm.require(authorization, "ec2-instance-connect:SendSSHPublicKey", [(arn, context)])
        return self.instance_connect.send_ssh_public_key(body, authorization)

    def _authorize_read(self, service: str, target: str, body: bytes, environ, start_response):
        """Every S3 request (``service_authz.s3_request``) and the reads of log events (CloudWatch Logs) of an IAM
        user or assumed role, judged by ``authz``: AWS's denial when the caller's policies do not allow it, else
        None (moto serves the call; the request is marked judged, so moto's hook, ``service_authz.judge``, does
        not judge it again). The lab's default credentials return at once."""
        key = authz.access_key(environ.get("HTTP_AUTHORIZATION", ""), environ.get("QUERY_STRING", ""))
        if not key or key == common.ACCESS_KEY:
            return None
        region = self._region(environ)
        account, partition = self.registry.account_id, authz.partition_of(region)
        who = None
        if service == "s3":
            found = service_authz.s3_request(environ, body, partition)
            if found is None:
                return None
            who = authz.caller(account, region, key)
            denial = service_authz.s3_denial(who, *found) if who is not None else None
        else:
            read = authz.logs_read(target, body, partition, region, account)
            if read is None:
                return None
            who = authz.caller(account, region, key)
            try:
                authz.require(who, read[0], [(read[1], {})])
                denial = None
            except authz.Denied as denied:
                denial = denied
        environ[service_authz.JUDGED] = True
        if denial is None:
            return None
        if service == "s3":
            xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                   f"<Message>{escape(denial.message(quoted=True))}</Message><RequestId>lab-authz</RequestId>"
                   "<HostId>lab</HostId></Error>").encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else xml]
        return self._json(start_response, 400, {"__type": "AccessDeniedException", "message": denial.message()},
                          {"x-amzn-ErrorType": "AccessDeniedException"})

    def _modify_vpc_endpoint(self, body: bytes, environ, start_response):
        """moto accepts PrivateDnsEnabled on ModifyVpcEndpoint and ignores it; AWS applies it."""
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        response = self.moto(environ, start_response)
        wanted = (form.get("PrivateDnsEnabled") or [None])[0]
        endpoint_id = (form.get("VpcEndpointId") or [""])[0]
        if wanted is not None:
            ec2 = get_backend("ec2")[self.registry.account_id][self._region(environ)]
            endpoint = ec2.vpc_end_points.get(endpoint_id)
            if endpoint is not None:
                endpoint.private_dns_enabled = wanted.lower() == "true"
                for node in self.registry.nodes.values():
                    node._cache = None
        return response

    def _run_instances(self, body: bytes, environ, start_response):
        """AWS creates an IAM instance profile association for every instance that RunInstances launches with
        IamInstanceProfile; moto creates one for the first instance at most. Add the missing ones."""
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        name = (form.get("IamInstanceProfile.Name") or [None])[0]
        arn = (form.get("IamInstanceProfile.Arn") or [None])[0]
        status = {}

        def capture(code, headers, exc_info=None):
            status["code"] = code
            return start_response(code, headers, exc_info)

        response = self.moto(environ, capture)
        if not (name or arn):
            return response
        chunks = list(response)
        if hasattr(response, "close"):
            response.close()
        if not str(status.get("code", "")).startswith("200"):
            return chunks
        try:
            root = ElementTree.fromstring(b"".join(chunks))
        except ElementTree.ParseError:
            return chunks
        ids = [e.text for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "instanceId" and e.text]
        ec2 = get_backend("ec2")[self.registry.account_id][self._region(environ)]
        known = {instance.id for instance in ec2.all_instances()}
        for instance_id in dict.fromkeys(ids):
            if instance_id in known and instance_id not in ec2.iam_instance_profile_associations:
                ec2.associate_iam_instance_profile(instance_id, name, arn)
        return chunks

    def _replace_profile_association(self, body: bytes, environ, start_response):
        """moto replaces the association's profile but leaves the instance's IamInstanceProfile as it was, so
        DescribeInstances shows the old one; AWS shows the new one. Bring the instance in line."""
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        association_id = (form.get("AssociationId") or [""])[0]
        response = list(self.moto(environ, start_response))
        ec2 = get_backend("ec2")[self.registry.account_id][self._region(environ)]
        for association in list(ec2.iam_instance_profile_associations.values()):
            if association.association_id == association_id:
                ec2.modify_instance_attribute(association.instance_id, "iam_instance_profile",
                                              {"Arn": association.iam_instance_profile.arn, "Id": association_id})
                for node in self.registry.nodes.values():
                    node._cache = None
        return response

    def _distribution(self, key: str, environ, start_response):
        """AWS's public bucket amazon-ssm-<region>, where the agent's packages are published."""
        if key == nodepkg.DEB_PATH:
            data, kind = nodepkg.deb(nodepkg.AGENT_LATEST), "application/vnd.debian.binary-package"
        elif key == nodepkg.VERSION_PATH:
            data, kind = nodepkg.AGENT_LATEST.encode(), "text/plain"
        else:
            start_response("404 Not Found", [("Content-Type", "application/xml")])
            return [b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"]
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(data)))])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else data]

    def _power(self, action: str, body: bytes, environ, start_response):
        """A reboot, or a stop then a start: the node's processes end, and when it boots again its init starts
        the agent if the agent's unit is enabled (the agent host reads that from the node's disk)."""
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        response = list(self.moto(environ, start_response))
        ids = [values[0] for key, values in form.items() if key.startswith("InstanceId.")]
        for instance_id in ids:
            node = self.registry.nodes.get(instance_id)
            if node is None or node.kind != "ec2":
                continue
            self._power_cycle(node, stop=action == "StopInstances")
        return response

    def _power_cycle(self, node: Node, stop: bool = False) -> None:
        """The node goes down: its sessions and commands end; unless stopped, it boots again (a new boot id) after
        REBOOT_SECONDS, and its init starts the agent if the agent's unit is enabled."""
        with self.registry.lock:
            if stop:
                node.agent_wanted = False  # until the next boot says otherwise
            else:
                node.boot += 1
                node.agent_down_until = time.time() + REBOOT_SECONDS
            node._cache = None
            if node.agent is not None:
                node.agent.dropping = True
                node.agent.send({"t": "drop"})

    def _simulate_principal_policy(self, body: bytes, environ, start_response):
        """moto does not implement SimulatePrincipalPolicy (its server answers 500); ``iamsim`` evaluates it."""
        _name, caller_arn, _tags = prefs.caller(self.registry, environ.get("HTTP_AUTHORIZATION", ""))
        status, xml = iamsim.handle(self.registry.account_id, caller_arn, body)
        data = xml.encode()
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
        return [data]

    def _region(self, environ) -> str:
        """The region the request is signed for (Credential=key/date/region/service/aws4_request)."""
        return self._signed_region(environ) or self.registry.region

    @staticmethod
    def _signed_region(environ) -> str:
        """The region in the request's signature (its Authorization header or, presigned, its query); "" if none."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if "Credential=" in auth:
            parts = auth.split("Credential=", 1)[1].split("/")
        else:
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            parts = (query.get("X-Amz-Credential") or [""])[0].split("/")
        return parts[2] if len(parts) > 2 else ""

    @staticmethod
    def _json(start_response, status: int, payload: dict, headers: dict | None = None):
        data = json.dumps(payload, default=str).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "application/x-amz-json-1.1"),
                                              ("Content-Length", str(len(data))), *(headers or {}).items()])
        return [data]

    # --- admin API -----------------------------------------------------------------------------------------
    def admin(self, environ, start_response):
        path = environ["PATH_INFO"][len("/_lab/"):].strip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        body = self._body(environ)
        try:
            request = json.loads(body) if body else {}
            result = self._admin(method, path.split("/"), request)
        except (ValueError, KeyError) as error:
            return self._json(start_response, 400, {"error": str(error)})
        if result is None:
            return self._json(start_response, 404, {"error": f"no such lab resource: {path}"})
        return self._json(start_response, 200, result)

    def _admin(self, method: str, parts: list[str], request: dict):
        registry = self.registry
        if parts == ["health"]:
            return {"ok": True, "message_port": self.messages.port}
        if parts == ["nodes"] and method == "GET":
            return {"nodes": [self._node_status(n) for n in list(registry.nodes.values()) if n.kind != "record"],
                    "records": sum(1 for n in registry.nodes.values() if n.kind == "record")}
        if parts == ["nodes"] and method == "POST":
            for item in request["nodes"]:
                registry.add_node(Node(**item))
            return {"added": len(request["nodes"])}
        if parts == ["agents"]:
            # What the agent host should run: every node with an agent process, and whether it is up.
            return {"agents": [
                {"id": n.id, "hostname": n.hostname, "platform": n.platform, "run": n.agent_should_run(),
                 "boot": n.boot, "endpoint": self.endpoint,
                 "sshd": n.sshd, "light": n.light, "os_release": n.platform_info()["os_release"],
                 "proxy": f"http://{n.id}:lab@{self.messages.host}:{self.messages.port}"}
                for n in list(registry.nodes.values()) if n.kind != "record"
            ]}
        if parts == ["instance-connect"]:
            # EC2 Instance Connect: how long a pushed key is valid (AWS: 60 s), and the keys valid now.
            return self.instance_connect.update(request) if method == "POST" else self.instance_connect.settings()
        if len(parts) == 4 and parts[0] == "nodes" and parts[2] == "instance-connect-keys":
            # What the node's sshd reads (AuthorizedKeysCommand), as AWS's script reads the instance metadata.
            return {"keys": self.instance_connect.active_keys(parts[1], urllib.parse.unquote(parts[3]))}
        if len(parts) == 2 and parts[0] == "nodes" and method == "GET":
            node = registry.nodes.get(parts[1])
            return None if node is None else self._node_status(node)
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "agent-restart":
            # systemctl restart amazon-ssm-agent: the agent reconnects (and reports the version now on disk);
            # its sessions and commands go on (KillMode=process).
            node = registry.nodes.get(parts[1])
            if node is None:
                return None
            node.agent_wanted = True
            if node.agent is not None:
                node.agent.send({"t": "restart"})
            return self._node_status(node)
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "reboot" and method == "POST":
            # shutdown -r / reboot / systemctl reboot inside the node: as on EC2, the command returns and the
            # machine goes down a moment later, then boots as after RebootInstances.
            node = registry.nodes.get(parts[1])
            if node is None or node.kind != "ec2":
                return None
            timer = threading.Timer(float(request.get("after", SHUTDOWN_SECONDS)), self._power_cycle, (node,))
            timer.daemon = True
            timer.start()
            return self._node_status(node)
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "booted":
            # The agent host booted the node: the agent runs from now on only if its unit is enabled.
            node = registry.nodes.get(parts[1])
            if node is None:
                return None
            node.agent_wanted = bool(request.get("agent"))
            node.booted = int(request.get("boot", node.boot))
            node._cache = None
            return self._node_status(node)
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] in ("agent-stop", "agent-start", "agent-drop"):
            node = registry.nodes.get(parts[1])
            if node is None:
                return None
            if parts[2] == "agent-stop":
                node.agent_wanted = False
            elif parts[2] == "agent-start":
                node.agent_wanted, node.agent_down_until = True, 0.0
            else:
                node.agent_down_until = time.time() + float(request.get("seconds", 10))
            if not node.agent_should_run() and node.agent is not None:
                node.agent.dropping = True
                node.agent.send({"t": "drop"})
            node._cache = None
            return self._node_status(node)
        if parts == ["clock"]:
            # The clock State Manager's schedule goes by: POST {"advance": seconds} moves it forward, so that a cron
            # or rate association comes due without waiting for it.
            if method == "POST":
                return self.associations.advance(float(request["advance"]))
            return {"offset": self.associations.offset, "now": self.associations.clock()}
        if parts == ["faults"]:
            if method == "POST":
                registry.faults.update(request)
            return registry.faults.as_dict()
        if parts == ["calls"]:
            if method == "DELETE":
                with registry.lock:
                    registry.api_calls.clear()
                    registry.api_regions.clear()
                    registry.api_throttled.clear()
                    registry.stream_counts.update(dict.fromkeys(registry.stream_counts, 0))
            return {"calls": dict(registry.api_calls), "total": sum(registry.api_calls.values()),
                    "regions": {region: dict(calls) for region, calls in registry.api_regions.items()},
                    "throttled": dict(registry.api_throttled), "stream": dict(registry.stream_counts)}
        return None

    def _node_status(self, node: Node) -> dict:
        problems = self.registry.problems(node, use_cache=False)
        return {
            "id": node.id,
            "kind": node.kind,
            "light": node.light,
            "hostname": node.hostname,
            "ip": node.ip,
            "ping_status": self.registry.ping_status(node) or "NotRegistered",
            "agent_connected": node.agent is not None,
            "agent_wanted": node.agent_wanted,
            "agent_version": node.agent_version,
            "boot": node.boot,
            "booted": node.booted,
            "platform": node.platform,
            "problems": [{"prerequisite": p.prerequisite, "code": p.code, "message": p.message} for p in problems],
            "s3_path": self.registry.s3_reachable(node),
        }


def _as_over_tls(statement: dict) -> dict | None:
    """A bucket policy statement as AWS applies it to a request made over TLS (every SDK call to AWS is; the
    lab's clients use plain HTTP only because the lab is local): a ``Bool aws:SecureTransport`` condition is
    decided here, and the statement is dropped when it does not hold. moto ignores Bool conditions, so without
    this a bucket policy that denies non-TLS requests would deny every request."""
    condition = statement.get("Condition") or {}
    secure = (condition.get("Bool") or {}).get("aws:SecureTransport")
    if secure is None:
        return statement
    if str(secure).lower() != "true":
        return None
    rest = {**condition, "Bool": {k: v for k, v in condition["Bool"].items() if k != "aws:SecureTransport"}}
    rest = {k: v for k, v in rest.items() if v}
    return {**statement, "Condition": rest} if rest else {k: v for k, v in statement.items() if k != "Condition"}


class Ec2Render:
    """What moto has rendered of DescribeInstances, per instance, for as long as no EC2 call changes anything.

    moto renders each instance field by field through the API model, about 4 ms an instance, and looks up an
    instance's tags by scanning every tag in the region; a page of 1,000 instances out of 10,000 took it some
    8 s. AWS answers that in about a second, so the lab renders an instance once and keeps the XML until the
    next EC2 call that is not a Describe/Get (any of them may change an instance: ``generation`` counts them,
    and XML rendered while one ran is not kept)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.instances: dict[tuple[str, str], str] = {}
        self.reservations: dict[tuple[str, str], tuple[str, str]] = {}

    def invalidate(self) -> None:
        with self.lock:
            self.generation += 1
            self.instances.clear()
            self.reservations.clear()


EC2_RENDER = Ec2Render()


class Ec2RenderInvalidation:
    """WSGI wrapper: an EC2 call that may change state drops the rendered XML, before and after it runs."""

    def __init__(self, app: LabApp) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_lab/"):
            return self.app(environ, start_response)
        body = LabApp._body(environ)
        mutating = LabApp._service(environ) == "ec2" and not LabApp._query_action(body, environ).startswith(
            ("Describe", "Get"))
        if not mutating:
            return self.app(environ, start_response)
        EC2_RENDER.invalidate()
        try:
            return list(self.app(environ, start_response))
        finally:
            EC2_RENDER.invalidate()


def _patch_describe_instances() -> None:
    """DescribeInstances pages as on AWS: by instance (a reservation may span two pages), MaxResults 5–1000,
    everything in one answer when MaxResults is absent. moto pages by reservation, 100 at a time, and accepts
    any MaxResults, so a fleet launched in a few large reservations would come back in one page whatever the
    caller asked. The XML is moto's own, rendered once per instance (``Ec2Render``); an instance's tags are
    looked up by its id instead of by a scan of every tag (moto's scan made large listings quadratic)."""
    import base64
    import copy

    from moto.core.responses import ActionResult
    from moto.core.serialize import XFormedAttributePicker
    from moto.ec2.exceptions import EC2ClientError, InvalidNextToken, InvalidParameterCombination
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self):
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [{"resource_id": self.id, "key": key, "value": value, "resource_type": kind}
                for key, value in (self.ec2_backend.tags.get(self.id) or {}).items()]

    class Page(ActionResult):
        def __init__(self, region: str, parts: list, next_token: str | None) -> None:
            super().__init__({"Reservations": parts, "NextToken": next_token})
            self.region = region
            self.parts = parts
            self.next_token = next_token

        def execute_result(self, context):
            def render(result) -> tuple:
                serializer = context.serializer_class(
                    operation_model=context.operation_model, pretty_print=False,
                    value_picker=XFormedAttributePicker(
                        response_transformers=getattr(context.response, "RESPONSE_KEY_PATH_TO_TRANSFORMER", None)))
                out = serializer.serialize(result)
                body = out["body"].decode() if isinstance(out["body"], bytes) else out["body"]
                return out["status_code"], out["headers"], body

            with EC2_RENDER.lock:
                generation = EC2_RENDER.generation
            items = []  # (reservation wrapper, its instances' XML), one per reservation part
            for part in self.parts:
                wrapper = EC2_RENDER.reservations.get((self.region, part.id))
                fragments = []
                for instance in part.instances:
                    fragment = EC2_RENDER.instances.get((self.region, instance.id))
                    if fragment is None or wrapper is None:
                        single = copy.copy(part)
                        single.instances = [instance]
                        xml = render({"Reservations": [single], "NextToken": None})[2]
                        opening, closing = xml.index("<instancesSet>"), xml.rindex("</instancesSet>")
                        fragment = xml[opening + len("<instancesSet>"):closing]
                        wrapper = (xml[xml.index("<reservationSet>") + len("<reservationSet>"):opening],
                                   xml[closing + len("</instancesSet>"):xml.rindex("</reservationSet>")])
                        with EC2_RENDER.lock:
                            if EC2_RENDER.generation == generation:
                                EC2_RENDER.instances[(self.region, instance.id)] = fragment
                                EC2_RENDER.reservations[(self.region, part.id)] = wrapper
                    fragments.append(fragment)
                items.append((wrapper, "".join(fragments)))
            status, headers, envelope = render({"Reservations": [], "NextToken": self.next_token})
            listing = "".join(f"{prefix}<instancesSet>{inner}</instancesSet>{suffix}" for (prefix, suffix), inner in items)
            if "<reservationSet/>" in envelope:
                envelope = envelope.replace("<reservationSet/>", f"<reservationSet>{listing}</reservationSet>", 1)
            else:
                envelope = envelope.replace("<reservationSet></reservationSet>",
                                            f"<reservationSet>{listing}</reservationSet>", 1)
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            return status, headers, envelope

    def describe_instances(self):
        self.error_on_dryrun()
        if "InstanceId.1" in self.data and "MaxResults" in self.data:
            raise InvalidParameterCombination("The parameter instancesSet cannot be used with the parameter maxResults")
        filter_dict = self._filters_from_querystring()
        instance_ids = self._get_param("InstanceIds", [])
        if instance_ids:
            reservations = self.ec2_backend.get_reservations_by_instance_ids(instance_ids, filters=filter_dict)
        else:
            reservations = self.ec2_backend.describe_instances(filters=filter_dict)
        pairs = [(reservation, instance) for reservation in reservations for instance in reservation.instances]
        token = self._get_param("NextToken")
        start = 0
        if token:
            try:
                start = int(json.loads(base64.b64decode(token))["o"])
            except (ValueError, KeyError, TypeError):
                raise InvalidNextToken(token)
        size = self._get_param("MaxResults")
        if size is None:
            end = len(pairs)
        else:
            size = int(size)
            if not 5 <= size <= 1000:
                raise EC2ClientError("InvalidParameterValue", f"Value ( {size} ) for parameter maxResults is invalid. "
                                     "Expecting a value between 5 and 1000.")
            end = start + size
        parts = []
        for reservation, instance in pairs[start:end]:
            if not parts or parts[-1].id != reservation.id:
                part = copy.copy(reservation)
                part.instances = []
                parts.append(part)
            parts[-1].instances.append(instance)
        next_token = base64.b64encode(json.dumps({"o": end}).encode()).decode() if end < len(pairs) else None
        return Page(self.ec2_backend.region_name, parts, next_token)

    TaggedEC2Resource.get_tags = get_tags
    InstanceResponse.describe_instances = describe_instances


def _patch_bucket_policies() -> None:
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(bucket, action: str, resource: str):
        if bucket.policy is None:
            return PermissionResult.NEUTRAL
        policy = json.loads(bucket.policy.decode())
        statements = policy.get("Statement") or []
        statements = [s for s in (map(_as_over_tls, statements if isinstance(statements, list) else [statements])) if s]
        if not statements:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**policy, "Statement": statements})).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission


def _patch_account_lookup() -> None:
    """moto finds the account of a request's access key in every partition's IAM backend, creating each one it has
    not yet made, and each loads all ~1,500 AWS managed policies (about a CPU-second per lab). A key exists only in
    a backend that was made: look in those alone. The answer is the same; the lab starts faster."""
    import moto.iam.models as iam_models

    def get_account_id_from(access_key: str) -> str:
        for account_id, account in list(iam_models.iam_backends.items()):
            for partition in list(dict.keys(account)):
                if access_key in account[partition].access_keys:
                    return account_id
        return iam_models.DEFAULT_ACCOUNT_ID

    iam_models.get_account_id_from = get_account_id_from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssm-lab-controlplane")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--message-port", type=int, required=True)
    parser.add_argument("--faults", default="{}", help="JSON object of fault settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    _patch_account_lookup()
    service_authz.install()
    _patch_bucket_policies()
    _patch_describe_instances()
    registry = Registry()
    registry.faults.update(json.loads(args.faults))
    endpoint = f"http://{args.host}:{args.port}"
    messages = MessageServer(registry, args.host, args.message_port,
                             on_session_end=lambda s: prefs.upload_transcript(registry, endpoint, s))
    messages.endpoint_address = (args.host, args.port)
    messages.start()
    app = LabApp(registry, messages, endpoint)
    trail = cloudtrail.Recorder(app, cloudtrail.Trail(registry.account_id), registry)
    server = make_server(args.host, args.port, Ec2RenderInvalidation(trail), threaded=True,
                         request_handler=MotoRequestHandler)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info("control plane on %s, messages on %s:%s", endpoint, args.host, args.message_port)
    try:
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
