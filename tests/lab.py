"""A lab for the tests: a Jumpstarter controller and router on 127.0.0.1, speaking the installed jumpstarter-protocol.

A test fixture, not a deployment. Labs run upstream's controller and router (Go, on Kubernetes: see
docs/running-exporters.md); this double answers the same RPCs so that the real `jmp run` (an exporter
config with `endpoint` and `token`) and the real `jmp shell --client-config C --selector k=v` can be
tested on one machine. It keeps what a lab relies on and nothing else, following upstream's
controller (controller/internal/controller/lease_controller.go, service/controller_service.go):

- exporters and clients are known by token (`add_exporter`, `add_client`, as `jmp admin create` does);
- a lease names a label selector (`k=v`, `k!=v`, `k`, `!k`, comma-separated) and a duration; it
  gets the first matching exporter that is online, not leased and Available. Otherwise it stays
  Pending (a second client *waits*, as upstream's does; `jmp shell` polls every 5 s), or is
  Unsatisfiable at once if no exporter matches the selector at all;
- a lease ends when its client deletes it, its exporter releases it (after afterLease), or its
  duration has passed (expiry): the exporter is told (`Status`), and is leased again only once it
  reports Available;
- `Dial` hands client and exporter the same router token; the router pairs the two streams that
  present it and forwards their frames as they are (back-pressured, a few frames deep).

Everything runs on one event loop in a background thread of the test process (`Lab.start()`),
behind TLS with a throw-away self-signed certificate (Jumpstarter 0.9 speaks only TLS to a controller;
the configs say `tls: {insecure: true}`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import anyio
import grpc
import yaml
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.from_thread import BlockingPortal, start_blocking_portal
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import empty_pb2
from harness import JMP, LOG_TAIL, Abort, child_env, run, start, stop_group, wait_for
from jumpstarter_protocol import (
    client_pb2,
    client_pb2_grpc,
    jumpstarter_pb2,
    jumpstarter_pb2_grpc,
    kubernetes_pb2,
    router_pb2,
    router_pb2_grpc,
)
from jumpstarter_protocol.jumpstarter.v1 import common_pb2

NAMESPACE = "default"
FRAMES_IN_FLIGHT = 8
"""Frames the router holds per direction before it stops reading from the sender (back-pressure)."""


def _status(name: str) -> int:
    """An ExporterStatus value by its short name (AVAILABLE, LEASE_READY...)."""
    return common_pb2.ExporterStatus.Value(f"EXPORTER_STATUS_{name}")


def status_name(value: int) -> str:
    """The short name of an ExporterStatus value."""
    return common_pb2.ExporterStatus.Name(value).removeprefix("EXPORTER_STATUS_")


# Statuses in which upstream's Dial lets a client through (checkExporterStatusForDriverCalls).
DIALABLE = {_status(s) for s in ("UNSPECIFIED", "BEFORE_LEASE_HOOK", "LEASE_READY", "AFTER_LEASE_HOOK")}
READY_FOR_LEASE = {_status("UNSPECIFIED"), _status("AVAILABLE")}


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether `labels` satisfy a label selector: `k=v` (or `k==v`), `k!=v`, `k` (exists), `!k`, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _timestamp(when: datetime.datetime) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _token(subject: str) -> str:
    """A bearer token shaped like the controller's: a JWT (`jmp shell` reads its `exp`), its signature random."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": subject, "exp": int(_now().timestamp()) + 86400, "jti": secrets.token_hex(8)}
    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(secrets.token_bytes(32))}"


@dataclass
class ExporterEntry:
    """An exporter the lab knows: its labels, whether it is registered, and what it last reported."""

    name: str
    labels: dict[str, str]
    token: str
    online: bool = False
    status: int = field(default_factory=lambda: _status("UNSPECIFIED"))
    message: str = ""
    reports: list[Any] = field(default_factory=list)
    watchers: list[ObjectSendStream[jumpstarter_pb2.StatusResponse]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    """Every status the exporter reported, by short name, in order (what a test checks)."""


@dataclass
class LeaseEntry:
    """A lease: who asked, for what, and where it stands."""

    name: str
    client: str
    selector: str
    exporter_name: str
    duration: datetime.timedelta
    created: datetime.datetime = field(default_factory=_now)
    exporter: str | None = None
    begin: datetime.datetime | None = None
    end: datetime.datetime | None = None
    ended_by: str = ""
    """Why it ended: "Released" (client or exporter) or "Expired"."""
    pending: tuple[str, str] = ("", "")
    unsatisfiable: str = ""
    listeners: tuple[ObjectSendStream[jumpstarter_pb2.ListenResponse], ObjectReceiveStream[Any]] = field(
        default_factory=lambda: anyio.create_memory_object_stream[jumpstarter_pb2.ListenResponse](16)
    )
    expiry: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        return self.exporter is not None and self.end is None


def _peer(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """(kind, token) of a caller, from the metadata Jumpstarter sends: jumpstarter-kind and a bearer token."""
    metadata = dict(context.invocation_metadata() or ())
    token = str(metadata.get("authorization", "")).removeprefix("Bearer ")
    return str(metadata.get("jumpstarter-kind", "")), token


@dataclass
class Controller(jumpstarter_pb2_grpc.ControllerServiceServicer, client_pb2_grpc.ClientServiceServicer):
    """The controller: registration, status, leases, and Dial (exporters' and clients' RPCs)."""

    router_endpoint: str
    exporters: dict[str, ExporterEntry] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)
    """Client name by token."""
    leases: dict[str, LeaseEntry] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    """Router tokens handed out by Dial."""
    counter: Iterator[int] = field(default_factory=itertools.count)

    # --- who calls
    async def _exporter(self, context: grpc.aio.ServicerContext) -> ExporterEntry:
        kind, token = _peer(context)
        for exporter in self.exporters.values():
            if kind == "Exporter" and secrets.compare_digest(exporter.token, token):
                return exporter
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown exporter token")
        raise AssertionError("unreachable")

    async def _client(self, context: grpc.aio.ServicerContext) -> str:
        kind, token = _peer(context)
        if kind == "Client" and token in self.clients:
            return self.clients[token]
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown client token")
        raise AssertionError("unreachable")

    async def _lease(self, name: str, client: str, context: grpc.aio.ServicerContext) -> LeaseEntry:
        lease = self.leases.get(name.rpartition("/")[2])
        if lease is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"lease {name} not found")
            raise AssertionError("unreachable")
        if lease.client != client:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        return lease

    # --- lease logic
    def _leased(self, exporter: ExporterEntry) -> LeaseEntry | None:
        return next((lease for lease in self.leases.values() if lease.active and lease.exporter == exporter.name), None)

    def _notify(self, exporter: ExporterEntry) -> None:
        """Tell an exporter's Status streams whether it is leased, by whom, under which lease."""
        lease = self._leased(exporter)
        update = jumpstarter_pb2.StatusResponse(
            leased=lease is not None,
            lease_name=lease.name if lease else "",
            client_name=lease.client if lease else "",
        )
        for watcher in list(exporter.watchers):
            try:
                watcher.send_nowait(update)
            except anyio.WouldBlock:
                pass  # a watcher 16 updates behind is stuck; the exporter retries its stream when it notices
            except anyio.BrokenResourceError:
                exporter.watchers.remove(watcher)

    def schedule(self) -> None:
        """Give each pending lease, oldest first, the first matching exporter that is free and ready."""
        for lease in sorted(self.leases.values(), key=lambda lease: lease.created):
            if lease.exporter is not None or lease.end is not None:
                continue
            candidates = [
                e
                for e in self.exporters.values()
                if matches(lease.selector, e.labels) and lease.exporter_name in ("", e.name)
            ]
            if not candidates:
                lease.unsatisfiable = f"There are no exporters matching the selector {lease.selector!r}"
                lease.end = _now()
                continue
            online = [e for e in candidates if e.online]
            free = [e for e in online if self._leased(e) is None]
            ready = [e for e in free if e.status in READY_FOR_LEASE]
            if not online:
                lease.pending = ("Offline", f"{len(candidates)} exporters match, none of them is online")
            elif not free:
                lease.pending = ("NotAvailable", f"{len(online)} exporters match, all of them are already leased")
            elif not ready:
                lease.pending = ("NotReady", f"{len(free)} exporters are free, none is ready (ending a lease)")
            else:
                exporter = ready[0]
                lease.exporter, lease.begin, lease.pending = exporter.name, _now(), ("", "")
                seconds = lease.duration.total_seconds()
                lease.expiry = asyncio.get_running_loop().call_later(seconds, self.end_lease, lease, "Expired")
                self._notify(exporter)

    def shorten(self, lease: LeaseEntry, seconds: float) -> None:
        """Make an active lease expire `seconds` from now (upstream's UpdateLease of its duration, by a test)."""
        assert lease.active and lease.begin is not None and lease.expiry is not None, lease
        lease.expiry.cancel()
        lease.duration = _now() + datetime.timedelta(seconds=seconds) - lease.begin
        lease.expiry = asyncio.get_running_loop().call_later(seconds, self.end_lease, lease, "Expired")

    def end_lease(self, lease: LeaseEntry, reason: str) -> None:
        """End a lease (released or expired): its exporter is told, and may serve the next once Available."""
        if lease.end is not None:
            return
        lease.end, lease.ended_by = _now(), reason
        if lease.expiry is not None:
            lease.expiry.cancel()
        lease.listeners[0].close()
        if lease.exporter is not None:
            self._notify(self.exporters[lease.exporter])
        self.schedule()

    def _lease_pb(self, lease: LeaseEntry) -> client_pb2.Lease:
        from google.protobuf import duration_pb2

        duration = duration_pb2.Duration()
        duration.FromTimedelta(lease.duration)
        conditions = []
        if lease.unsatisfiable:
            conditions.append(kubernetes_pb2.Condition(type="Unsatisfiable", status="True", reason="NoExporter"))
            conditions[-1].message = lease.unsatisfiable
            conditions[-1].reason = "NoAccess"
        elif lease.end is not None:
            conditions.append(kubernetes_pb2.Condition(type="Ready", status="False", reason=lease.ended_by))
            conditions.append(kubernetes_pb2.Condition(type="Pending", status="False", reason=lease.ended_by))
        elif lease.exporter is not None:
            conditions.append(kubernetes_pb2.Condition(type="Ready", status="True", reason="Ready"))
            conditions.append(kubernetes_pb2.Condition(type="Pending", status="False", reason="Ready"))
        else:
            reason, message = lease.pending
            conditions.append(kubernetes_pb2.Condition(type="Pending", status="True", reason=reason, message=message))
        pb = client_pb2.Lease(
            name=f"namespaces/{NAMESPACE}/leases/{lease.name}",
            selector=lease.selector,
            duration=duration,
            client=f"namespaces/{NAMESPACE}/clients/{lease.client}",
            exporter=f"namespaces/{NAMESPACE}/exporters/{lease.exporter}" if lease.exporter else "",
            conditions=conditions,
        )
        if lease.begin is not None:
            pb.effective_begin_time.CopyFrom(_timestamp(lease.begin))
        if lease.end is not None:
            pb.effective_end_time.CopyFrom(_timestamp(lease.end))
        return pb

    def _exporter_pb(self, exporter: ExporterEntry) -> client_pb2.Exporter:
        return client_pb2.Exporter(
            name=f"namespaces/{NAMESPACE}/exporters/{exporter.name}",
            labels=exporter.labels,
            online=exporter.online,
            status=exporter.status,  # type: ignore[arg-type]
            status_message=exporter.message,
        )

    # --- ControllerService, called by exporters
    async def Register(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        exporter = await self._exporter(context)
        exporter.reports, exporter.online = list(request.reports), True
        self.schedule()
        return jumpstarter_pb2.RegisterResponse(uuid=exporter.name)

    async def Unregister(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        exporter = await self._exporter(context)
        exporter.online, exporter.status = False, _status("OFFLINE")
        return jumpstarter_pb2.UnregisterResponse()

    async def ReportStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        exporter = await self._exporter(context)
        exporter.status, exporter.message = request.status, request.message
        exporter.statuses.append(status_name(request.status))
        if request.release_lease and (lease := self._leased(exporter)):
            self.end_lease(lease, "Released")
        self.schedule()
        return jumpstarter_pb2.ReportStatusResponse()

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        exporter = await self._exporter(context)
        send, receive = anyio.create_memory_object_stream[jumpstarter_pb2.StatusResponse](16)
        exporter.watchers.append(send)
        self._notify(exporter)  # the current state first, as upstream's does
        try:
            async with receive:
                async for update in receive:  # ends when the exporter hangs up (the RPC is cancelled)
                    yield update
        finally:
            if send in exporter.watchers:
                exporter.watchers.remove(send)

    async def Listen(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        exporter = await self._exporter(context)
        lease = self.leases.get(request.lease_name)
        if lease is None or lease.exporter != exporter.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
            return
        async for connection in lease.listeners[1].clone():  # ends with the lease
            yield connection
        await anyio.sleep_forever()  # the exporter cancels its Listen itself once told the lease ended

    async def ReleaseLease(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        kind, _ = _peer(context)
        if kind == "Exporter":
            exporter = await self._exporter(context)
            lease = self.leases.get(request.name)
            if lease is None or lease.exporter != exporter.name:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        else:
            lease = await self._lease(request.name, await self._client(context), context)
        assert lease is not None
        self.end_lease(lease, "Released")
        return jumpstarter_pb2.ReleaseLeaseResponse()

    # --- ControllerService, called by clients
    async def Dial(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        lease = await self._lease(request.lease_name, await self._client(context), context)
        if not lease.active:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "lease not active")
        exporter = self.exporters[str(lease.exporter)]
        if exporter.status not in DIALABLE:
            status = status_name(exporter.status)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"exporter is not ready (status: {status})")
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        lease.listeners[0].send_nowait(
            jumpstarter_pb2.ListenResponse(router_endpoint=self.router_endpoint, router_token=token)
        )
        return jumpstarter_pb2.DialResponse(router_endpoint=self.router_endpoint, router_token=token)

    # --- ClientService
    async def GetExporter(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._client(context)
        exporter = self.exporters.get(request.name.rpartition("/")[2])
        if exporter is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"exporter {request.name} not found")
        assert exporter is not None
        return self._exporter_pb(exporter)

    async def ListExporters(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._client(context)
        found = [self._exporter_pb(e) for e in self.exporters.values() if matches(request.filter, e.labels)]
        return client_pb2.ListExportersResponse(exporters=found)

    async def GetLease(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self._lease_pb(await self._lease(request.name, await self._client(context), context))

    async def ListLeases(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        client = await self._client(context)
        mine = [
            self._lease_pb(lease)
            for lease in self.leases.values()
            if lease.client == client and (lease.end is None or not request.only_active)
        ]
        return client_pb2.ListLeasesResponse(leases=mine)

    async def CreateLease(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        client = await self._client(context)
        spec = request.lease
        if not spec.selector and not spec.exporter_name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a selector or an exporter name is required")
        name = request.lease_id or f"lease-{next(self.counter)}-{secrets.token_hex(3)}"
        lease = LeaseEntry(name, client, spec.selector, spec.exporter_name, spec.duration.ToTimedelta())
        self.leases[name] = lease
        self.schedule()
        return self._lease_pb(lease)

    async def DeleteLease(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        lease = await self._lease(request.name, await self._client(context), context)
        self.end_lease(lease, "Released")
        return empty_pb2.Empty()


@dataclass
class _Route:
    """The two directions of one routed stream: whoever presents the token first is side 0."""

    directions: list[tuple[ObjectSendStream[Any], ObjectReceiveStream[Any]]] = field(
        default_factory=lambda: [anyio.create_memory_object_stream[Any](FRAMES_IN_FLIGHT) for _ in range(2)]
    )
    joined: int = 0


@dataclass
class Router(router_pb2_grpc.RouterServiceServicer):
    """The router: pairs the two streams that present one Dial token, and forwards frames between them."""

    controller: Controller
    routes: dict[str, _Route] = field(default_factory=dict)
    streams: int = 0
    """Streams routed so far (a test can see that traffic went through the router)."""

    async def Stream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _, token = _peer(context)
        if token not in self.controller.tokens:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown router token")
        route = self.routes.setdefault(token, _Route())
        side, route.joined = route.joined, route.joined + 1
        if side == 1:  # both ends are here: the token is used up
            del self.routes[token]
            self.controller.tokens.discard(token)
            self.streams += 1
        outgoing, incoming = route.directions[side][0], route.directions[1 - side][1]

        async def forward() -> None:
            """Frames from this side to the other, as they are; closing `outgoing` tells the other side we ended."""
            with outgoing:
                try:
                    async for frame in request_iterator:
                        response = router_pb2.StreamResponse(payload=frame.payload, frame_type=frame.frame_type)
                        await outgoing.send(response)
                except (anyio.BrokenResourceError, grpc.aio.AioRpcError):
                    pass

        # A plain asyncio task, not a task group: grpc.aio drives this generator and may close it at a `yield`.
        task = asyncio.create_task(forward())
        try:
            with incoming:
                async for frame in incoming:  # ends when the other side has ended
                    yield frame
        finally:
            # The route stays until the other side has come, and found this one gone: a client killed
            # before its exporter connected must not leave that exporter's stream waiting for it.
            task.cancel()


def _certificate() -> tuple[bytes, bytes]:
    """A throw-away self-signed certificate for 127.0.0.1 (clients in `insecure` mode trust what they are shown)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "jumpstarter test lab")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


class LabConfigs:
    """The configs that point exporters and clients at a lab, from its endpoint and the tokens it hands out."""

    endpoint: str

    def add_exporter(self, name: str, labels: dict[str, str]) -> str:
        raise NotImplementedError

    def add_client(self, name: str) -> str:
        raise NotImplementedError

    def exporter_config(self, export_config: dict[str, Any], name: str, labels: dict[str, str]) -> dict[str, Any]:
        """An exporter config (`jmp run --exporter-config`) for this lab: `export_config` with endpoint and token."""
        token = self.add_exporter(name, labels)
        return export_config | {
            "metadata": {"namespace": NAMESPACE, "name": name},
            "endpoint": self.endpoint,
            "token": token,
            "tls": {"insecure": True},
        }

    def client_config(self, path: Path, name: str, allow: list[str]) -> Path:
        """Write a client config (`jmp shell --client-config`) for this lab, with the drivers it allows."""
        config = {
            "apiVersion": "jumpstarter.dev/v1alpha1",
            "kind": "ClientConfig",
            "metadata": {"namespace": NAMESPACE, "name": name},
            "endpoint": self.endpoint,
            "token": self.add_client(name),
            "tls": {"insecure": True},
            "drivers": {"allow": allow},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


@dataclass
class Lab(LabConfigs):
    """A running controller and router (one port) in this process."""

    endpoint: str
    controller: Controller
    router: Router
    portal: BlockingPortal

    def add_exporter(self, name: str, labels: dict[str, str]) -> str:
        """Declare an exporter with labels (what `jmp admin create exporter` does); return its token."""
        token = _token(name)
        self.portal.call(lambda: self.controller.exporters.__setitem__(name, ExporterEntry(name, labels, token)))
        return token

    def add_client(self, name: str) -> str:
        """Declare a client; return its token."""
        token = _token(name)
        self.portal.call(lambda: self.controller.clients.__setitem__(token, name))
        return token

    def state(self, function: Any) -> Any:
        """Run `function(controller)` on the lab's event loop (a consistent view of its state) and return the result."""
        return self.portal.call(lambda: function(self.controller))

    def leases(self) -> list[LeaseEntry]:
        """Every lease so far, oldest first."""
        return self.state(lambda c: sorted(c.leases.values(), key=lambda lease: lease.created))

    def exporter(self, name: str) -> ExporterEntry:
        return self.state(lambda c: c.exporters[name])

    def shorten(self, name: str, seconds: float) -> None:
        """Make lease `name` expire `seconds` from now: a test need not wait out the duration it gave for its setup."""
        self.state(lambda c: c.shorten(c.leases[name], seconds))


@contextmanager
def lab() -> Iterator[Lab]:
    """Start a controller and router on 127.0.0.1 (a free port) in a background thread; stop them at exit."""
    with ExitStack() as stack:
        portal = stack.enter_context(start_blocking_portal("asyncio"))
        key, certificate = _certificate()

        async def start() -> tuple[grpc.aio.Server, Controller, Router, str]:
            # Jumpstarter's clients and exporters ping every 20 s, idle or not (jumpstarter.common.grpc); grpc's
            # default server answers pings that come faster than every 5 min with GOAWAY "too_many_pings" after
            # two strikes, which cancels a lease's long transfers. Permit them, as the real controller does.
            options = [
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_ping_strikes", 0),
            ]
            server = grpc.aio.server(options=options)
            port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, certificate)]))
            endpoint = f"127.0.0.1:{port}"
            controller = Controller(router_endpoint=endpoint)
            router = Router(controller)
            jumpstarter_pb2_grpc.add_ControllerServiceServicer_to_server(controller, server)
            client_pb2_grpc.add_ClientServiceServicer_to_server(controller, server)
            router_pb2_grpc.add_RouterServiceServicer_to_server(router, server)
            await server.start()
            return server, controller, router, endpoint

        server, controller, router, endpoint = portal.call(start)
        stack.callback(lambda: portal.call(server.stop, None))
        yield Lab(endpoint, controller, router, portal)


@dataclass
class LabExporter:
    """A `jmp run` registered with a lab (its config has `endpoint` and `token`), in its own directory."""

    process: subprocess.Popen
    name: str
    labels: dict[str, str]
    workdir: Path
    config: Path
    log: Path

    @property
    def selector(self) -> str:
        """A selector that picks this exporter: its labels."""
        return ",".join(f"{key}={value}" for key, value in self.labels.items())

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        """The last lines the exporter wrote, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- last {lines} lines of {self.log}:\n" + "\n".join(text.splitlines()[-lines:])

    def serving_pid(self) -> int:
        """`jmp run` forks: the child (its own session) serves, the parent restarts it and forwards signals."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(wait_for(lambda: children.read_text().split(), what="jmp run's child", context=self.log_tail)[0])

    def open_fds(self) -> int:
        """How many file descriptors the serving process has open (a leak shows as growth)."""
        return len(os.listdir(f"/proc/{self.serving_pid()}/fd"))

    def fd_targets(self) -> str:
        """What the serving process's file descriptors are, one a line (for failure messages)."""
        fds = Path(f"/proc/{self.serving_pid()}/fd")
        return "".join(f"{fd} -> {os.readlink(fds / fd)}\n" for fd in sorted(os.listdir(fds), key=int))


@contextmanager
def lab_exporter(
    running: Lab,
    workdir: Path,
    config: dict[str, Any],
    name: str,
    labels: dict[str, str],
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[LabExporter]:
    """`jmp run` of `config` registered with `running` as `name`; ready once the lab sees it Available.

    Stopped with SIGTERM (it unregisters, and runs afterLease if a lease is on), then SIGKILL, however the test ends.
    `env` replaces the exporter's environment (default: the harness's child_env()).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "exporter.yaml"
    path.write_text(yaml.safe_dump(running.exporter_config(config, name, labels), sort_keys=False))
    log = workdir / "exporter.log"
    with log.open("w") as output:
        process = start(
            [JMP, "run", "--exporter-config", str(path)], cwd=workdir, stdout=output, env=env or child_env()
        )
    exporter = LabExporter(process, name, labels, workdir, path, log)
    try:

        def available() -> bool:
            if process.poll() is not None:
                raise Abort(f"jmp run exited with status {process.returncode}")
            entry = running.exporter(name)
            return entry.online and status_name(entry.status) == "AVAILABLE"

        wait_for(available, timeout, f"exporter {name} Available in the lab", context=exporter.log_tail)
        yield exporter
    finally:
        stop_group(process, signal.SIGTERM, timeout=90)


def lab_shell(
    client_config: Path,
    selector: str,
    script: str,
    duration: int = 600,
    timeout: float = 180.0,
    cwd: Path | None = None,
    context: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a shell script in `jmp shell --client-config C --selector S` (a lease); return its result.

    Through a lease `jmp shell` exits with the command's status. The lease lasts `duration` seconds at most.
    """
    args = [JMP, "shell", "--client-config", str(client_config), "--selector", selector, "--duration", str(duration)]
    args += ["--", "sh", "-c", f"set -e\n{script}"]
    return run(args, timeout=timeout, cwd=cwd or client_config.parent, context=context)


@dataclass
class LabProcess(LabConfigs):
    """A lab in a process of its own (`python tests/lab.py`): the benchmark's, so that the router has a CPU's
    worth of its own and does not share an interpreter with the client it serves."""

    process: subprocess.Popen
    endpoint: str

    def _ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def add_exporter(self, name: str, labels: dict[str, str]) -> str:
        return self._ask(json.dumps({"exporter": name, "labels": labels}))

    def add_client(self, name: str) -> str:
        return self._ask(json.dumps({"client": name}))


@contextmanager
def lab_process() -> Iterator[LabProcess]:
    """Start `python tests/lab.py` (a lab in its own process); stopped by closing its stdin, or killed."""
    process = subprocess.Popen(
        [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        if not endpoint:
            raise RuntimeError(f"tests/lab.py exited with status {process.wait(timeout=10)}")
        yield LabProcess(process, endpoint)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_group(process, signal.SIGKILL)


def main() -> None:
    """Serve a lab until stdin closes: print its endpoint, then answer each JSON line (a declaration) with a token."""
    with lab() as running:
        print(running.endpoint, flush=True)
        for line in sys.stdin:  # ends when the parent closes stdin (or exits)
            request = json.loads(line)
            if "exporter" in request:
                print(running.add_exporter(request["exporter"], request["labels"]), flush=True)
            else:
                print(running.add_client(request["client"]), flush=True)


if __name__ == "__main__":
    main()
