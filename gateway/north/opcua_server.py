"""OPC UA server (asyncua): the twin as typed objects named after the model.

Address space, in our namespace (OpcUaConfig.namespace_uri)::

    Objects/<site>/<VPP>/<resource or PLANT>/<logical node>/<data object>/<data attribute>
    e.g.  Objects/DEMO/VPP1/BAT01/MMXU1/TotW/mag.f   NodeId ns=<ours>;s=VPP1.BAT01/MMXU1.TotW.mag.f

A point's NodeId is its object reference, so it is stable across restarts and across sites; the
containers are named by their reference prefix (VPP1, VPP1.BAT01, VPP1.BAT01/MMXU1, ...), the site
by "site:<id>", properties by "<owner>#<BrowseName>". Resources carry their CIM mRID, kind, name
and aggregator as properties. Float points are AnalogItemType (EURange from the spec's min/max,
EngineeringUnits as UNECE codes) or BaseAnalogType when they have no range; int and bool points
are BaseDataVariableType. A parent with more than FOLDER_LIMIT children gets intermediate
folders (asyncua's cost of adding a child grows with the number of siblings).

Theory of operation:

- Values. One task follows a bounded twin subscription: it writes each changed Sample as a
  DataValue (value, StatusCode mapped from the IEC 61850 quality, the sample's source timestamp)
  and asyncua turns the writes into data-change notifications for subscribed clients. It yields
  to the event loop every `yield_every` writes (write_attribute_value never does, and a long
  burst would starve the clients' sessions). A gap in change-set numbers (the queue dropped
  change sets) makes it rewrite every point from a snapshot.
- Writes. Client writes do not reach the address space: a replacement AttributeService takes
  every Value write of a read-write point to the command path (origin "opcua") when the session's
  user may write set-points (security.users.can_write); anything else is refused with a status
  code and nothing reaches a device. The variable keeps showing the twin's value, so a command
  that the device does not follow is visible.
- History. HistoryRead of a point reads the twin's HistoryStore (TwinHistoryStorage, read-only).
- Identity. Sessions are anonymous (when `anonymous: read`) or user name + password checked
  against the user store; both can browse, read, subscribe and read history.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator
from asyncua.server.address_space import AttributeService
from asyncua.server.history import HistoryManager, HistoryStorageInterface
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.commands import CommandPath
from gateway.errors import CommandRejected, GatewayError
from model.command import Command, CommandState
from model.errors import UnknownPointError
from model.north_opcua import OpcUaConfig
from model.points import Access, DType, PointSpec, split_ref
from model.quality import (
    FAILURE,
    INACCURATE,
    OLD_DATA,
    OPERATOR_BLOCKED,
    OUT_OF_RANGE,
    SUBSTITUTED,
    VALIDITY_MASK,
    Validity,
)
from model.sample import Sample, Value
from model.site import SiteConfig
from security.users import User as Account
from security.users import UserStore, UserStoreError, can_write
from twin.errors import HistoryError
from twin.history import HistoryStore
from twin.subscription import Subscription
from twin.twin import Twin

__all__ = [
    "FOLDER_LIMIT",
    "OpcUaError",
    "OpcUaServer",
    "TwinHistoryStorage",
    "ensure_server_certificate",
    "eu_information",
    "status_of",
]

log = logging.getLogger(__name__)

FOLDER_LIMIT = 500
_SC = StatusCodes


def _nid(identifier: int | str, ns: int = 0) -> ua.NodeId:
    """A NodeId (asyncua annotates its own int and str subclasses; plain ones work the same)."""
    return ua.NodeId(identifier, ns)  # type: ignore[arg-type]


def _sc(code: int) -> ua.StatusCode:
    """A StatusCode from its int value."""
    return ua.StatusCode(code)  # type: ignore[arg-type]


def _dv(
    variant: ua.Variant,
    status: ua.StatusCode,
    source: datetime | None = None,
    server: datetime | None = None,
) -> ua.DataValue:
    """A DataValue with timestamps."""
    return ua.DataValue(variant, StatusCode=status, SourceTimestamp=source, ServerTimestamp=server)  # type: ignore[arg-type]


class OpcUaError(GatewayError):
    """The OPC UA server could not be set up as configured."""


# --- quality -> StatusCode ---------------------------------------------------------------------


def status_of(quality: int) -> int:
    """OPC UA StatusCode for an IEC 61850 quality (OPC 10000-8 / IEC 61850-7-3 validity).

    good -> Good (GoodLocalOverride when substituted or operator-blocked); invalid -> Bad
    (BadDeviceFailure on failure, BadOutOfService when blocked); questionable -> Uncertain,
    refined by detail: oldData -> UncertainLastUsableValue, substituted ->
    UncertainSubstituteValue, inaccurate -> UncertainSensorNotAccurate, outOfRange ->
    UncertainEngineeringUnitsExceeded.
    """
    v = quality & VALIDITY_MASK
    if v == Validity.GOOD:
        return _SC.GoodLocalOverride if quality & (SUBSTITUTED | OPERATOR_BLOCKED) else _SC.Good
    if v == Validity.INVALID:
        if quality & FAILURE:
            return _SC.BadDeviceFailure
        if quality & OPERATOR_BLOCKED:
            return _SC.BadOutOfService
        return _SC.Bad
    # questionable (and the reserved value, read as questionable)
    if quality & OLD_DATA:
        return _SC.UncertainLastUsableValue
    if quality & SUBSTITUTED:
        return _SC.UncertainSubstituteValue
    if quality & INACCURATE:
        return _SC.UncertainSensorNotAccurate
    if quality & OUT_OF_RANGE:
        return _SC.UncertainEngineeringUnitsExceeded
    return _SC.Uncertain


# --- engineering units -------------------------------------------------------------------------

_UNECE_NS = "http://www.opcfoundation.org/UA/units/un/cefact"
# unit as the model writes it -> (UNECE Rec. 20 common code, display name, description)
_UNITS: dict[str, tuple[str, str, str]] = {
    "W": ("WTT", "W", "watt"),
    "kW": ("KWT", "kW", "kilowatt"),
    "MW": ("MAW", "MW", "megawatt"),
    "kvar": ("KVR", "kvar", "kilovar"),
    "var": ("D45", "var", "var"),
    "kVA": ("KVA", "kVA", "kilovolt ampere"),
    "Wh": ("WHR", "Wh", "watt hour"),
    "kWh": ("KWH", "kWh", "kilowatt hour"),
    "MWh": ("MWH", "MWh", "megawatt hour"),
    "kvarh": ("K3", "kvarh", "kilovolt ampere reactive hour"),
    "%": ("P1", "%", "percent"),
    "degC": ("CEL", "°C", "degree Celsius"),
    "V": ("VLT", "V", "volt"),
    "kV": ("KVT", "kV", "kilovolt"),
    "A": ("AMP", "A", "ampere"),
    "Hz": ("HTZ", "Hz", "hertz"),
    "s": ("SEC", "s", "second"),
    "min": ("MIN", "min", "minute"),
    "h": ("HUR", "h", "hour"),
    "kW/min": ("", "kW/min", "kilowatt per minute"),
}


def eu_information(unit: str) -> ua.EUInformation:
    """EUInformation for a unit, with the UNECE code's UnitId where one is known (OPC 10000-8 5.6.3).

    UnitId is the common code's characters packed big-endian into an Int32; -1 means no code.
    """
    code, display, desc = _UNITS.get(unit, ("", unit, unit))
    unit_id = 0
    for c in code:
        unit_id = (unit_id << 8) | ord(c)
    return ua.EUInformation(
        NamespaceUri=_UNECE_NS,
        UnitId=unit_id if code else -1,
        DisplayName=ua.LocalizedText(display),
        Description=ua.LocalizedText(desc),
    )


# --- certificates ------------------------------------------------------------------------------


def _cert_problem(cert: x509.Certificate, key: rsa.RSAPrivateKey, app_uri: str) -> str | None:
    """Why cert cannot serve as ours (with key, for app_uri), or None when it can."""
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - timedelta(days=1):
        return (
            f"it is not valid now (valid {cert.not_valid_before_utc} to {cert.not_valid_after_utc})"
        )
    if cert.public_key() != key.public_key():
        return "it does not belong to the private key"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no subjectAltName"
    if app_uri not in san.get_values_for_type(x509.UniformResourceIdentifier):
        # OPC 10000-6 6.2.2: the application instance certificate names the ApplicationUri.
        return f"its subjectAltName does not hold the application URI {app_uri}"
    return None


def _read_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise OpcUaError(f"{path}: not a certificate (DER or PEM): {e}") from e


def ensure_server_certificate(cfg: OpcUaConfig) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The server's certificate and key, made self-signed when missing (first run).

    A self-signed certificate made here is made again when it expires or no longer fits (other
    key, other application URI); a certificate from elsewhere (issued by a CA) is never
    overwritten: a problem with it is an OpcUaError naming it. The key file is created 0600.
    Blocking (RSA key generation): call it through asyncio.to_thread on the event loop.
    """
    cert_path, key_path = Path(cfg.certificate), Path(cfg.private_key)
    key: rsa.RSAPrivateKey | None = None
    if key_path.is_file():
        try:
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise OpcUaError(f"{key_path}: cannot read the server private key: {e}") from e
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise OpcUaError(f"{key_path}: the server key must be RSA (Basic256Sha256)")
        key = loaded
    old = _read_cert(cert_path) if cert_path.is_file() else None
    if old is not None:
        self_signed = old.issuer == old.subject
        problem = (
            "there is no private key for it"
            if key is None
            else _cert_problem(old, key, cfg.application_uri)
        )
        if problem is None and key is not None:
            return old, key
        if not self_signed:
            raise OpcUaError(f"{cert_path}: the server certificate cannot be used: {problem}")
        log.warning("OPC UA server certificate %s: %s; making a new one", cert_path, problem)
    if key is None:
        key = cert_gen.generate_private_key()
        key_path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start: the key is never readable by others, even briefly.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_gen.dump_private_key_as_pem(key))
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(cfg.application_uri)]
    for h in dict.fromkeys([*cfg.certificate_hosts, socket.gethostname(), cfg.host]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        cfg.server_name,
        {},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=cfg.certificate_days,
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cert_path.with_name(cert_path.name + ".tmp")
    pem = cert_path.suffix.lower() == ".pem"
    tmp.write_bytes(cert.public_bytes(Encoding.PEM if pem else Encoding.DER))
    os.replace(tmp, cert_path)
    log.info("OPC UA: made a self-signed server certificate %s", cert_path)
    return cert, key


async def _reject_every_certificate(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
    raise ServiceError(_SC.BadCertificateUntrusted)


async def _client_validator(trusted: Path) -> Callable[..., Any]:
    """A validator admitting only client certificates found in `trusted` (none if it is empty)."""
    if not trusted.is_dir():
        raise OpcUaError(f"trusted_client_certs_dir {trusted} is not a directory")
    store = TrustStore([trusted], [])
    try:
        await store.load()
    except ValueError:  # no certificate in it (cryptography refuses an empty store)
        log.warning("OPC UA: no certificate in %s: every client certificate is refused", trusted)
        return _reject_every_certificate
    return CertificateValidator(trust_store=store)


# --- identity and permissions ------------------------------------------------------------------


@dataclass
class SessionUser(User):
    """asyncua's session user, carrying our account (None for anonymous)."""

    account: Account | None = None


class _UserManager:
    """Maps activation tokens to session users: anonymous (if allowed) or name + password."""

    def __init__(self, users: UserStore | None, anonymous: bool) -> None:
        self.users = users
        self.anonymous = anonymous

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            # Anonymous token (X509 identity tokens are not offered, so asyncua rejects them
            # before this; `certificate` here is the secure channel's peer certificate).
            return SessionUser(role=UserRole.Anonymous, name=None) if self.anonymous else None
        if self.users is None or password is None:
            log.warning("OPC UA login refused for %r: no user store", username)
            return None
        account = self.users.authenticate(username, password)
        if account is None:
            log.warning("OPC UA login refused for %r", username)
            return None
        log.info("OPC UA session for %s (%s)", account.name, ",".join(sorted(account.roles)))
        return SessionUser(role=UserRole.User, name=account.name, account=account)


class _Ruleset(PermissionRuleset):
    """Every session may use the ordinary services; none may change the address space.

    Writes are allowed here on purpose: each write item is then answered on its own by the
    write service (BadUserAccessDenied for a user without a writing role), as OPC 10000-4 5.10.4
    expects, rather than the whole request failing.
    """

    def __init__(self) -> None:
        self._allowed = frozenset(_nid(t) for t in USER_TYPES)

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        return user is not None and action_type_id in self._allowed


# --- the address space -------------------------------------------------------------------------


@dataclass(slots=True)
class _TreeNode:
    id: str
    browse: str
    parent: str | None
    description: str = ""
    folder: bool = False
    spec: PointSpec | None = None
    props: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Point:
    spec: PointSpec
    nodeid: ua.NodeId
    vtype: ua.VariantType
    convert: Callable[[Value], Any]


_VTYPE = {
    DType.FLOAT: ua.VariantType.Double,
    DType.INT: ua.VariantType.Int32,
    DType.BOOL: ua.VariantType.Boolean,
}
_DATATYPE = {
    DType.FLOAT: ObjectIds.Double,
    DType.INT: ObjectIds.Int32,
    DType.BOOL: ObjectIds.Boolean,
}
_CONVERT: dict[DType, Callable[[Value], Any]] = {
    DType.FLOAT: float,
    DType.INT: int,
    DType.BOOL: bool,
}


def _int32(v: Value) -> int:
    i = int(v)
    if not -(2**31) <= i < 2**31:
        raise OverflowError(f"{v} does not fit an Int32")
    return i


def _build_tree(site: SiteConfig, specs: Iterable[PointSpec]) -> dict[str, _TreeNode]:
    """Every node of our namespace by NodeId string, parents before children."""
    nodes: dict[str, _TreeNode] = {}

    def add(n: _TreeNode) -> _TreeNode:
        nodes[n.id] = n
        if n.parent is not None:
            nodes[n.parent].children.append(n.id)
        return n

    root = add(
        _TreeNode(f"site:{site.site.id}", site.site.id, None, site.site.name or site.site.id)
    )
    root.props["Name"] = site.site.name or site.site.id
    resources: dict[str, tuple[str, str, Any]] = {}
    for v in site.vpps:
        vn = add(_TreeNode(v.id, v.id, root.id, v.name or f"virtual power plant {v.id}"))
        vn.props["Name"] = v.name or v.id
        if v.mrid:
            vn.props["mRID"] = v.mrid
        for agg_id, res in [("", r) for r in v.resources] + [
            (a.id, r) for a in v.aggregators for r in a.resources
        ]:
            resources[f"{v.id}.{res.id}"] = (v.id, agg_id, res)

    def container(nid: str, browse: str, parent: str, desc: str = "") -> str:
        if nid not in nodes:
            add(_TreeNode(nid, browse, parent, desc))
        return nid

    for spec in specs:
        ld, path = split_ref(spec.ref)
        vpp_id, _, ld_rest = ld.partition(".")
        if vpp_id not in nodes:
            container(vpp_id, vpp_id, root.id)
        if ld not in nodes:
            info = resources.get(ld)
            if info is not None:
                _, agg_id, res = info
                n = add(_TreeNode(ld, res.id, vpp_id, res.name or res.id))
                n.props.update(
                    {"mRID": res.mrid, "Kind": res.kind.value, "Name": res.name or res.id}
                )
                if agg_id:
                    n.props["Aggregator"] = agg_id
            else:
                desc = f"{vpp_id} as one plant" if ld_rest == "PLANT" else ""
                container(ld, ld_rest or ld, vpp_id, desc)
        parts = path.split(".")
        ln_id = container(f"{ld}/{parts[0]}", parts[0], ld)
        if len(parts) == 2:
            parent, browse = ln_id, parts[1]
        else:
            parent = container(f"{ld}/{parts[0]}.{parts[1]}", parts[1], ln_id)
            browse = ".".join(parts[2:])
        if spec.ref in nodes:  # already made as a data-object container: it becomes the variable
            n = nodes[spec.ref]
            n.spec, n.description = spec, spec.description or spec.ref
        else:
            add(_TreeNode(spec.ref, browse, parent, spec.description or spec.ref, spec=spec))
    _split_large(nodes)
    return nodes


def _split_large(nodes: dict[str, _TreeNode]) -> None:
    """Put the children of a node with more than FOLDER_LIMIT of them into folders of that size.

    Folders are named after the first and last child they hold ("BAT01..PV99") and nest when
    one level of folders is still too many.
    """
    limit = FOLDER_LIMIT

    def span(nid: str) -> tuple[str, str]:
        n = nodes[nid]
        if n.folder:
            first, _, last = n.browse.partition("..")
            return first, last
        return n.browse, n.browse

    for n in list(nodes.values()):
        kids, depth = n.children, 0
        while len(kids) > limit:
            groups = []
            for k in range(0, len(kids), limit):
                part = kids[k : k + limit]
                name = f"{span(part[0])[0]}..{span(part[-1])[1]}"
                folder = _TreeNode(f"{n.id}#{depth}.{k // limit}", name, n.id, folder=True)
                folder.children = part
                nodes[folder.id] = folder
                for c in part:
                    nodes[c].parent = folder.id
                groups.append(folder.id)
            kids, depth = groups, depth + 1
        n.children = kids


def _object_item(ns: int, n: _TreeNode, parent: ua.NodeId) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = _nid(n.id, ns)
    item.BrowseName = ua.QualifiedName(n.browse, ns)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = _nid(ObjectIds.Organizes if n.folder else ObjectIds.HasComponent)
    item.TypeDefinition = _nid(ObjectIds.FolderType if n.folder else ObjectIds.BaseObjectType)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(n.browse)
    attrs.Description = ua.LocalizedText(n.description)
    attrs.EventNotifier = 0
    item.NodeAttributes = attrs
    return item


def _variable_item(ns: int, n: _TreeNode, parent: ua.NodeId, historizing: bool) -> ua.AddNodesItem:
    spec = n.spec
    assert spec is not None
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = _nid(n.id, ns)
    item.BrowseName = ua.QualifiedName(n.browse, ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = _nid(ObjectIds.HasComponent)
    if spec.dtype == DType.FLOAT:
        ranged = spec.min is not None and spec.max is not None
        vt = ObjectIds.AnalogItemType if ranged else ObjectIds.BaseAnalogType
    else:
        vt = ObjectIds.BaseDataVariableType
    item.TypeDefinition = _nid(vt)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(n.browse)
    attrs.Description = ua.LocalizedText(n.description)
    attrs.DataType = _nid(_DATATYPE[spec.dtype])
    attrs.Value = ua.Variant(
        None, ua.VariantType.Null
    )  # BadWaitingForInitialData until the twin has one
    attrs.ValueRank = ua.ValueRank.Scalar
    level = ua.AccessLevel.CurrentRead.mask
    if spec.access == Access.RW:
        level |= ua.AccessLevel.CurrentWrite.mask
    if historizing:
        level |= ua.AccessLevel.HistoryRead.mask
    attrs.AccessLevel = level
    attrs.UserAccessLevel = level
    attrs.Historizing = historizing
    attrs.WriteMask = 0
    attrs.UserWriteMask = 0
    attrs.MinimumSamplingInterval = 0.0
    item.NodeAttributes = attrs
    return item


def _property_item(ns: int, owner: str, name: str, value: Any) -> ua.AddNodesItem:
    if isinstance(value, ua.EUInformation):
        var, dtype = ua.Variant(value, ua.VariantType.ExtensionObject), ObjectIds.EUInformation
    elif isinstance(value, ua.Range):
        var, dtype = ua.Variant(value, ua.VariantType.ExtensionObject), ObjectIds.Range
    else:
        var, dtype = ua.Variant(str(value), ua.VariantType.String), ObjectIds.String
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = _nid(f"{owner}#{name}", ns)
    # Standard properties (EURange, EngineeringUnits) keep namespace 0 browse names.
    std = name in ("EURange", "EngineeringUnits")
    item.BrowseName = ua.QualifiedName(name, 0 if std else ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = _nid(owner, ns)
    item.ReferenceTypeId = _nid(ObjectIds.HasProperty)
    item.TypeDefinition = _nid(ObjectIds.PropertyType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.DataType = _nid(dtype)
    attrs.Value = var
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.WriteMask = 0
    attrs.UserWriteMask = 0
    item.NodeAttributes = attrs
    return item


# --- history -----------------------------------------------------------------------------------

_MIN_TIME = datetime(1601, 1, 2, tzinfo=UTC)  # DateTime.MinValue and anything near it: "not given"
_US = 1_000_000
_CONT = struct.Struct(
    "<cqI"
)  # direction b"F"/b"R", UTC microseconds, values at that time already sent


def _given(t: datetime | None) -> int | None:
    """UTC microseconds of a request time; None for DateTime.MinValue (not specified)."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if t < _MIN_TIME:
        return None
    return round(t.timestamp() * _US)


def _us(ts: float) -> int:
    return round(ts * _US)


class TwinHistoryStorage(HistoryStorageInterface):
    """asyncua history backend over the twin's HistoryStore: raw reads only, nothing written.

    OPC 10000-11 6.5.3.2 (ReadRaw): "If endTime is less than startTime, or endTime and
    numValuesPerNode alone are specified then the data will be returned in reverse order";
    startTime is included and endTime excluded; equal start and end ask for the values at that
    instant. When more than numValuesPerNode values (or the configured maximum) exist, a
    continuation point is returned; ours holds the direction, the time of the next value and how
    many values at that time were already sent, so paging neither repeats nor skips values that
    share a timestamp. Bounding values (returnBounds) are not supported.
    """

    def __init__(
        self, store: HistoryStore, points: Callable[[ua.NodeId], _Point | None], max_values: int
    ) -> None:
        super().__init__(max_values)
        self.store = store
        self._points = points

    async def init(self) -> None:
        """Nothing to prepare: the store is opened by its owner."""

    async def stop(self) -> None:
        """Nothing to close: the store belongs to its owner."""

    async def new_historized_node(
        self, node_id: ua.NodeId, period: timedelta | None, count: int = 0
    ) -> None:
        """History comes from the twin's writer; server-side historizing is not used."""

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        """Read-only: the twin's HistoryWriter stores samples."""

    async def read_node_history(
        self, node_id: ua.NodeId, start: datetime | None, end: datetime | None, nb_values: int
    ) -> tuple[list[ua.DataValue], datetime | None]:
        """The interface's form of read_raw: the continuation is the next value's time."""
        values, cont = await self.read_raw(node_id, start, end, nb_values, None)
        if cont is None:
            return values, None
        return values, datetime.fromtimestamp(_CONT.unpack(cont)[1] / _US, UTC)

    async def read_raw(
        self,
        node_id: ua.NodeId,
        start: datetime | None,
        end: datetime | None,
        nb_values: int,
        cont: bytes | None,
    ) -> tuple[list[ua.DataValue], bytes | None]:
        """DataValues of a point over the request's time domain, and a continuation point.

        ValueError for a continuation point that is not one of ours.
        """
        point = self._points(node_id)
        if point is None:
            return [], None
        s, e = _given(start), _given(end)
        cap = self.max_history_data_response_size
        want = min(nb_values, cap) if nb_values else cap
        reverse = (s is not None and e is not None and e < s) or (s is None and e is not None)
        # Bounds in raw()'s terms, [lo, hi) in microseconds, None = open.
        lo: int | None
        hi: int | None
        if reverse:
            if s is not None and e is not None:  # from start (included) back to end (excluded)
                lo, hi = e + 1, s + 1
            else:  # back from end (excluded)
                lo, hi = None, e
        else:
            lo = s
            hi = s + 1 if (s is not None and s == e) else e
        skip = 0
        if cont:
            if len(cont) != _CONT.size:
                raise ValueError("not a continuation point of this server")
            direction, at, skip = _CONT.unpack(cont)
            if direction not in (b"F", b"R") or (direction == b"R") != reverse:
                raise ValueError("continuation point does not match the request")
            # Resume at the next value's time, inclusive; `skip` values there were already sent.
            if reverse:
                hi = at + 1
            else:
                lo = at
        ref = point.spec.ref
        if reverse:
            samples = await asyncio.to_thread(self._reverse, ref, lo, hi, want + 1 + skip)
        else:
            samples = await asyncio.to_thread(
                self._raw,
                ref,
                None if lo is None else lo / _US,
                None if hi is None else hi / _US,
                want + 1 + skip,
            )
        samples = samples[skip:]
        next_cont = None
        if len(samples) > want:
            nxt = _us(samples[want].ts)
            same = sum(1 for x in samples[:want] if _us(x.ts) == nxt)
            next_cont = _CONT.pack(b"R" if reverse else b"F", nxt, same)
            samples = samples[:want]
        now = datetime.now(UTC)
        return [_history_value(point, smp, now) for smp in samples], next_cont

    def _raw(self, ref: str, start: float | None, end: float | None, limit: int) -> list[Sample]:
        try:
            return self.store.raw(ref, start, end, limit)
        except UnknownPointError:  # the store has never held a value of this point
            return []

    def _reverse(self, ref: str, lo: int | None, hi: int | None, need: int) -> list[Sample]:
        """Newest first: at most `need` values with lo <= ts < hi (microseconds; None = open).

        HistoryStore.raw reads oldest first with a limit, so the newest values are found by reading
        windows that end at `hi` and grow backwards, narrowing a window too dense to read whole.
        """
        lo_s = None if lo is None else lo / _US
        first = self._raw(ref, lo_s, None if hi is None else hi / _US, 1)
        if not first:
            return []
        earliest = _us(first[0].ts)
        upper = hi if hi is not None else _us(time.time()) + 366 * 86400 * _US
        out: list[Sample] = []
        width = 60 * _US
        cap = max(need, 1000)
        while len(out) < need:
            lower = upper - width
            last = lower <= earliest or (lo is not None and lower <= lo)
            if lo is not None:
                lower = max(lower, lo)
            chunk = self._raw(ref, lower / _US, upper / _US, cap + 1)
            if len(chunk) > cap and width > 1:
                width = max(width // 8, 1)  # too dense to take whole: a narrower window
                continue
            # Equal timestamps keep the store's order, reversed with the rest.
            out.extend(reversed(chunk))
            if last:
                break
            upper, width = lower, width * 4
        return out[:need]

    async def new_historized_event(
        self, source_id: ua.NodeId, evtypes: list[Any], period: timedelta | None, count: int = 0
    ) -> None:
        """Events are not historized."""

    async def save_event(self, event: Any) -> None:
        """Events are not historized."""

    async def read_event_history(
        self,
        source_id: ua.NodeId,
        start: datetime | None,
        end: datetime | None,
        nb_values: int,
        evfilter: ua.EventFilter,
    ) -> tuple[list[Any], datetime | None]:
        """No event history."""
        return [], None


def _history_value(point: _Point, s: Sample, now: datetime) -> ua.DataValue:
    status = status_of(s.quality)
    v: Any = s.value
    if isinstance(v, float) and math.isnan(v) and point.spec.dtype != DType.FLOAT:
        status = _SC.Bad
    variant = ua.Variant(None, ua.VariantType.Null)
    if not _sc(status).is_bad():
        try:
            variant = ua.Variant(point.convert(v), point.vtype)
        except (ValueError, OverflowError):
            status = _SC.Bad
    return _dv(variant, _sc(status), datetime.fromtimestamp(s.ts, UTC), now)


class _HistoryManager(HistoryManager):
    """asyncua's history manager with our continuation points and status codes."""

    def __init__(self, iserver: Any, points: Callable[[ua.NodeId], _Point | None]) -> None:
        super().__init__(iserver)
        self._points = points
        self.enabled = False

    async def _read_history(self, details: Any, rv: ua.HistoryReadValueId) -> ua.HistoryReadResult:
        result = ua.HistoryReadResult()
        if not self.enabled or self._points(rv.NodeId) is None:
            result.StatusCode = _sc(_SC.BadHistoryOperationUnsupported)
            return result
        if not isinstance(details, ua.ReadRawModifiedDetails):
            result.StatusCode = _sc(_SC.BadHistoryOperationUnsupported)
            return result
        if details.IsReadModified:  # nothing in the twin's history is ever modified
            result.HistoryData = ua.HistoryModifiedData()
            result.StatusCode = _sc(_SC.GoodNoData)
            return result
        storage = self.storage
        assert isinstance(storage, TwinHistoryStorage)
        try:
            values, cont = await storage.read_raw(
                rv.NodeId,
                details.StartTime,
                details.EndTime,
                details.NumValuesPerNode,
                rv.ContinuationPoint or None,
            )
        except ValueError:
            result.StatusCode = _sc(_SC.BadContinuationPointInvalid)
            return result
        except HistoryError as e:
            log.error("OPC UA HistoryRead of %s failed: %s", rv.NodeId.Identifier, e)
            result.StatusCode = _sc(_SC.BadHistoryOperationInvalid)
            return result
        result.HistoryData = ua.HistoryData(DataValues=values)
        result.ContinuationPoint = cont
        if not values and cont is None:
            result.StatusCode = _sc(_SC.GoodNoData)
        return result


# --- writes ------------------------------------------------------------------------------------

_REJECTED: dict[str, int] = {
    "out_of_limits": _SC.BadOutOfRange,
    "bad_value": _SC.BadOutOfRange,
    "bad_type": _SC.BadTypeMismatch,
    "read_only": _SC.BadNotWritable,
    "unknown_point": _SC.BadNodeIdUnknown,
    "no_route": _SC.BadNotWritable,
    "expired": _SC.BadTimeout,
    "conflict": _SC.BadInvalidState,
}


_ADMIN = User(role=UserRole.Admin)


class _WriteService(AttributeService):
    """Client writes go to the command path; the server's own writes pass through unchanged."""

    def __init__(self, aspace: Any, owner: OpcUaServer) -> None:
        super().__init__(aspace)
        self._owner = owner

    async def write(self, params: ua.WriteParameters, user: User = _ADMIN) -> list[ua.StatusCode]:
        if user.role == UserRole.Admin:  # the server itself (internal session), not a client
            return await super().write(params, user)
        return [_sc(await self._owner._client_write(wv, user)) for wv in params.NodesToWrite]


# --- the server --------------------------------------------------------------------------------


class OpcUaServer:
    """The twin on OPC UA: browse, read, subscribe, HistoryRead, and writes through the command path."""

    def __init__(
        self,
        config: OpcUaConfig,
        site: SiteConfig,
        twin: Twin,
        commands: CommandPath,
        history: HistoryStore | None = None,
        users: UserStore | None = None,
    ) -> None:
        self.config = config
        self.site = site
        self.twin = twin
        self.commands = commands
        self.history = history
        self.users = users
        self.ns = 0
        self.server: Server | None = None
        self._points: dict[ua.NodeId, _Point] = {}
        self._by_ref: dict[str, _Point] = {}
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._status: dict[int, ua.StatusCode] = {}
        self._owns_users = False
        self._endpoint = config.endpoint
        self.values_written = 0
        self.resyncs = 0
        self.writes_accepted = 0
        self.writes_refused = 0

    @property
    def endpoint(self) -> str:
        """The opc.tcp URL clients connect to (with the port the OS chose when configured as 0)."""
        return self._endpoint

    @property
    def backlog(self) -> int:
        """Twin change sets waiting to be written into the address space."""
        return len(self._sub) if self._sub is not None else 0

    def node_id(self, ref: str) -> ua.NodeId:
        """NodeId of a point (UnknownPointError-free: any ref maps, served or not)."""
        return _nid(ref, self.ns)

    def _point(self, nodeid: ua.NodeId) -> _Point | None:
        return self._points.get(nodeid)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the address space, load certificates and users, listen, follow the twin."""
        cfg = self.config
        if self.users is None and cfg.users_file:
            try:
                self.users = await asyncio.to_thread(
                    UserStore.load, cfg.users_file, missing_ok=True
                )
            except UserStoreError as e:
                raise OpcUaError(f"OPC UA users: {e}") from e
            self._owns_users = True
            if not len(self.users):
                log.info("OPC UA: no users in %s: only anonymous sessions", cfg.users_file)
        server = Server(user_manager=_UserManager(self.users, cfg.anonymous == "read"))  # type: ignore[arg-type]
        hm = _HistoryManager(server.iserver, self._point)
        server.iserver.history_manager = hm
        if self.history is not None:
            hm.set_storage(TwinHistoryStorage(self.history, self._point, cfg.history_max_values))
            hm.enabled = True
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(cfg.server_name)
        await server.set_application_uri(cfg.application_uri)
        tokens: list[type] = []
        if cfg.anonymous == "read":
            tokens.append(ua.AnonymousIdentityToken)
        if cfg.security_policies != ["None"]:
            tokens.append(ua.UserNameIdentityToken)
        else:
            # With no signing policy asyncua would take the password in the clear.
            log.warning("OPC UA: only SecurityPolicy None is configured: user logins are off")
        server.set_identity_tokens(tokens)
        policies = [
            getattr(ua.SecurityPolicyType, "NoSecurity" if p == "None" else p)
            for p in cfg.security_policies
        ]
        server.set_security_policy(policies, permission_ruleset=_Ruleset())  # type: ignore[arg-type]
        # A certificate is needed even with only "None": user passwords are encrypted with it.
        cert, key = await asyncio.to_thread(ensure_server_certificate, cfg)
        await server.load_certificate(cert.public_bytes(Encoding.DER), "der")
        await server.load_private_key(cert_gen.dump_private_key_as_pem(key), None, "pem")
        if cfg.trusted_client_certs_dir:
            server.set_certificate_validator(
                await _client_validator(Path(cfg.trusted_client_certs_dir))
            )
        server.iserver.attribute_service = _WriteService(server.iserver.aspace, self)
        self.ns = await server.register_namespace(cfg.namespace_uri)
        await self._build(server)
        self.server = server
        sub = self._sub = self.twin.subscribe("opcua", cfg.subscriber_queue)
        # Current values before anyone can connect; later changes come from the subscription.
        seq = self.twin.seq
        await self._write_snapshot()
        try:
            await server.start()
        except OSError as e:
            self.twin.unsubscribe(sub)
            self._sub = None
            self.server = None
            raise OpcUaError(f"OPC UA server cannot listen on {cfg.endpoint}: {e}") from e
        if cfg.port == 0 and server.bserver is not None:
            self._endpoint = f"opc.tcp://{cfg.host}:{server.bserver.port}"
        self._task = asyncio.create_task(self._follow(sub, seq), name="opcua-follow")
        log.info(
            "OPC UA server on %s (%d points, namespace %d)",
            self.endpoint,
            len(self._points),
            self.ns,
        )

    async def stop(self) -> None:
        """Stop following the twin and close every session."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        users = self.users
        if self._owns_users and users is not None and users.dirty and users.path is not None:
            try:  # passwords re-hashed at login (new Argon2 parameters) are kept
                await asyncio.to_thread(users.save)
            except (OSError, UserStoreError) as e:
                log.warning("could not save re-hashed passwords: %s", e)

    async def __aenter__(self) -> OpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters for status pages."""
        return {
            "endpoint": self.endpoint,
            "points": len(self._points),
            "values_written": self.values_written,
            "resyncs": self.resyncs,
            "writes_accepted": self.writes_accepted,
            "writes_refused": self.writes_refused,
        }

    # --- building ----------------------------------------------------------------------------

    async def _build(self, server: Server) -> None:
        ns = self.ns
        specs = list(self.twin.specs.values())
        tree = _build_tree(self.site, specs)
        historizing = self.history is not None
        objects = _nid(ObjectIds.ObjectsFolder)
        items: list[ua.AddNodesItem] = []
        props: list[ua.AddNodesItem] = []
        # Parents before children: a breadth-first walk from the site node.
        level = [n for n in tree.values() if n.parent is None]
        while level:
            nxt: list[_TreeNode] = []
            for n in level:
                parent = objects if n.parent is None else _nid(n.parent, ns)
                if n.spec is not None:
                    items.append(_variable_item(ns, n, parent, historizing))
                    if n.spec.unit:
                        props.append(
                            _property_item(
                                ns, n.id, "EngineeringUnits", eu_information(n.spec.unit)
                            )
                        )
                    if (
                        n.spec.dtype == DType.FLOAT
                        and n.spec.min is not None
                        and n.spec.max is not None
                    ):
                        props.append(
                            _property_item(
                                ns, n.id, "EURange", ua.Range(Low=n.spec.min, High=n.spec.max)
                            )
                        )
                else:
                    items.append(_object_item(ns, n, parent))
                props.extend(_property_item(ns, n.id, k, v) for k, v in n.props.items())
                nxt.extend(tree[c] for c in n.children)
            level = nxt
        mgt = server.iserver.node_mgt_service
        everything = items + props  # properties after every node they hang on
        for start in range(0, len(everything), 500):
            batch = everything[start : start + 500]
            for it, res in zip(batch, mgt.add_nodes(batch), strict=True):
                if not res.StatusCode.is_good():
                    raise OpcUaError(
                        f"cannot add OPC UA node {it.RequestedNewNodeId.Identifier!r}: {res.StatusCode.name}"
                    )
            await asyncio.sleep(0)
        for spec in specs:
            convert = _int32 if spec.dtype == DType.INT else _CONVERT[spec.dtype]
            p = _Point(spec, _nid(spec.ref, ns), _VTYPE[spec.dtype], convert)
            self._points[p.nodeid] = p
            self._by_ref[spec.ref] = p

    # --- values ------------------------------------------------------------------------------

    def _datavalue(self, p: _Point, s: Sample, now: datetime) -> ua.DataValue:
        q = s.quality
        status = self._status.get(q)
        if status is None:
            status = self._status[q] = _sc(status_of(q))
        try:
            variant = ua.Variant(p.convert(s.value), p.vtype)
        except (ValueError, OverflowError, TypeError):
            variant, status = (
                ua.Variant(None, ua.VariantType.Null),
                _sc(_SC.BadOutOfRange),
            )
        return _dv(variant, status, datetime.fromtimestamp(s.ts, UTC), now)

    async def _write_samples(self, samples: Iterable[Sample]) -> None:
        assert self.server is not None
        write = self.server.iserver.aspace.write_attribute_value
        by_ref = self._by_ref
        value_attr = AttributeIds.Value
        every = self.config.yield_every
        now = datetime.now(UTC)
        n = 0
        for s in samples:
            p = by_ref.get(s.point)
            if p is None:
                continue
            await write(p.nodeid, value_attr, self._datavalue(p, s, now))
            n += 1
            if n % every == 0:
                # write_attribute_value never yields: without this a burst starves the sessions.
                await asyncio.sleep(0)
                now = datetime.now(UTC)
        self.values_written += n

    async def _write_snapshot(self) -> None:
        waiting = _dv(ua.Variant(None, ua.VariantType.Null), _sc(_SC.BadWaitingForInitialData))
        assert self.server is not None
        snapshot = self.twin.snapshot()
        have = {s.point for s in snapshot}
        write = self.server.iserver.aspace.write_attribute_value
        for i, (ref, p) in enumerate(self._by_ref.items()):
            if ref not in have:
                await write(p.nodeid, AttributeIds.Value, waiting)
            if i % self.config.yield_every == 0:
                await asyncio.sleep(0)
        await self._write_samples(snapshot)

    async def _follow(self, sub: Subscription, seq: int) -> None:
        """Write every twin change into the address space; resync from a snapshot after a gap."""
        try:
            while True:
                cs = await sub.get()
                if cs is None:
                    if sub.closed:
                        return
                    continue
                for c in [cs, *sub.drain()]:
                    if c.seq <= seq:
                        continue  # already in the snapshot written at start or after a gap
                    if c.seq != seq + 1:
                        self.resyncs += 1
                        log.warning(
                            "OPC UA: %d twin change sets dropped; rewriting all points",
                            c.seq - seq - 1,
                        )
                        seq = self.twin.seq
                        await self._write_samples(self.twin.snapshot())
                        break
                    seq = c.seq
                    await self._write_samples(c.changes)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("OPC UA: following the twin failed")
            raise
        finally:
            self.twin.unsubscribe(sub)

    # --- client writes -----------------------------------------------------------------------

    async def _client_write(self, wv: ua.WriteValue, user: User) -> int:
        """Status of one client write item; a permitted set-point becomes a command."""
        code = await self._client_write_inner(wv, user)
        if _sc(code).is_good():
            self.writes_accepted += 1
        else:
            self.writes_refused += 1
        return code

    async def _client_write_inner(self, wv: ua.WriteValue, user: User) -> int:
        p = self._points.get(wv.NodeId)
        if p is None:
            assert self.server is not None
            known = wv.NodeId in self.server.iserver.aspace
            return _SC.BadNotWritable if known else _SC.BadNodeIdUnknown
        if wv.AttributeId != AttributeIds.Value or p.spec.access != Access.RW:
            return _SC.BadNotWritable
        account = getattr(user, "account", None)
        who = account.name if account is not None else "anonymous"
        if not can_write(account):
            log.warning("OPC UA write to %s refused: %s may not write set-points", p.spec.ref, who)
            return _SC.BadUserAccessDenied
        if wv.IndexRange:
            return _SC.BadWriteNotSupported
        raw = wv.Value.Value.Value if wv.Value is not None and wv.Value.Value is not None else None
        value = _coerce(p.spec, raw)
        if value is None:
            return _SC.BadTypeMismatch
        cmd = Command(
            p.spec.ref, value, "opcua", deadline=time.time() + self.config.command_deadline_s
        )
        try:
            rec = await self.commands.submit(cmd)
        except CommandRejected as e:
            log.info("OPC UA write by %s to %s=%r rejected: %s", who, p.spec.ref, value, e.reason)
            return _REJECTED.get(e.code, _SC.BadUserAccessDenied)
        log.info("OPC UA write by %s: %s=%r is command %s", who, p.spec.ref, value, cmd.id)
        if self.config.write_wait == "accepted":
            return _SC.Good
        deadline = time.monotonic() + self.config.write_timeout_s
        while rec.state in (CommandState.ACCEPTED, CommandState.SELECTED):
            if time.monotonic() >= deadline:
                return _SC.GoodCompletesAsynchronously
            await asyncio.sleep(0.01)
        state = rec.state
        if state in (CommandState.SENT, CommandState.CONFIRMED):
            return _SC.Good
        if state == CommandState.TIMED_OUT:
            return _SC.BadTimeout
        if state == CommandState.FAILED:
            reason = rec.history[-1].reason.lower()
            return (
                _SC.BadNoCommunication
                if "connect" in reason or "link" in reason
                else _SC.BadDeviceFailure
            )
        return _SC.BadInvalidState


def _coerce(spec: PointSpec, v: Any) -> Value | None:
    """The written Variant's value as the point's type; None when it cannot be that type."""
    if spec.dtype == DType.BOOL:
        return v if isinstance(v, bool) else None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if spec.dtype == DType.INT:
        return int(v) if float(v).is_integer() else None
    return float(v)
