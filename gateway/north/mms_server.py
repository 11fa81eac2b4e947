"""IEC 61850 MMS server (libiec61850 through pyiec61850-ng): the twin served as an IED.

The model is built from the site (model.north_mms explains the naming): one logical device per
served resource (`VPP1BAT02`) and per VPP plant (`VPP1PLANT`), logical nodes and data objects as
the point references name them (MMXU1.TotW.mag.f becomes LN MMXU1, DO TotW, DA mag.f [MX] with q
and t beside it), LLN0 with a data set of every served value and the configured buffered and
unbuffered report control blocks. A writable point is a controllable object (APC, SPC, DPC or
INC) whose status attribute (mxVal or stVal) and the point's own attribute (e.g. setMag.f [SP])
show the twin's value.

Theory of operation.

Monitor direction. A task takes the twin's change sets from a bounded subscription and hands each
batch to one worker thread, which takes the data model lock and updates value, quality (model
quality -> libiec61850 numbering, gateway.south.iec61850.quality_to_mms) and time of every served
attribute that changed; libiec61850 then builds the reports. A gap in the change-set sequence
(the subscription dropped some) makes the worker re-read every served point from the twin.

Control direction. libiec61850 runs the control state machine (IEC 61850-7-2 clause 20) in its
server thread, with the data model locked, and calls two handlers per controllable object:

* the check handler, at select (SBOw; SBO carries no value) and at operate, decides at once:
  the command path's policy and routing check (limits, read-only, type, owner driver), the
  owning driver's link, and when the client sets the interlock-check bit, that the resource's
  active power is good. A refusal sets the AddCause (IEC 61850-7-2 has none for a value out of
  range: object-value-invalid with Blocked-by-interlocking, the operative check that refused it)
  and nothing is sent.
* the control handler, polled every ~10 ms while it answers "waiting": the first call submits
  the command (origin "mms") to the command path on the event loop; later calls answer OK once
  the owning driver reported it SENT (or the read-back confirmed it), FAILED with an AddCause
  when the command failed, timed out or was refused. With enhanced security libiec61850 sends
  the command termination (+ or - with the AddCause) from that answer.

Threads and the GIL (see DEPENDENCIES.md). pyiec61850's SWIG wrappers keep the GIL while they
block, and the server thread holds the data model lock while it runs a Python handler (which
needs the GIL). A thread that blocks in IedServer_lockDataModel through SWIG while holding the
GIL therefore deadlocks with a control handler (seen in gdb), so the lock, the unlock and
IedServer_stop are called through ctypes, which releases the GIL. Handlers never wait for the
event loop; they read the twin (plain reads) and hand work over with run_coroutine_threadsafe.
pyiec61850 keeps one control subscriber per object reference in a process-wide map, and a
subscriber deletes its handlers: they are handed to C++ (`__disown__`), a second server serving
the same reference in one process is refused, and subscribers are deleted explicitly after the
server is stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyiec61850.pyiec61850 as iec

from gateway.commands import CommandPath
from gateway.errors import CommandRejected, GatewayError
from gateway.south.iec61850 import ADD_CAUSES, native, ptr, quality_to_mms, release_swig
from model.command import Command, CommandState
from model.natures import Role
from model.north_mms import MmsServerConfig, mms_ld_name
from model.points import DType, PointSpec, split_ref
from model.quality import GOOD, Validity, with_validity
from model.sample import Sample, Value
from model.site import SiteConfig
from twin.twin import Twin

__all__ = ["MmsServer", "MmsServerError", "mms_reference"]

log = logging.getLogger(__name__)

_FC_BY_FIRST_DA = {
    "mag": "MX", "cVal": "MX", "instMag": "MX", "instCVal": "MX", "mxVal": "MX", "range": "MX",
    "stVal": "ST", "actVal": "ST", "frVal": "ST", "pulsQty": "ST", "setMag": "SP",
    "setVal": "SP", "setCal": "SP", "ctlModel": "CF", "units": "CF", "db": "CF", "minVal": "CF",
    "maxVal": "CF",
}  # fmt: skip
_MODEL_CODES = {
    "status-only": 0,
    "direct-with-normal-security": iec.CDC_CTL_MODEL_DIRECT_NORMAL,
    "sbo-with-normal-security": iec.CDC_CTL_MODEL_SBO_NORMAL,
    "direct-with-enhanced-security": iec.CDC_CTL_MODEL_DIRECT_ENHANCED,
    "sbo-with-enhanced-security": iec.CDC_CTL_MODEL_SBO_ENHANCED,
}
_TRIGGERS = {
    "dchg": iec.TRG_OPT_DATA_CHANGED,
    "qchg": iec.TRG_OPT_QUALITY_CHANGED,
    "dupd": iec.TRG_OPT_DATA_UPDATE,
    "period": iec.TRG_OPT_INTEGRITY,
    "gi": iec.TRG_OPT_GI,
}
_LEAF_TYPES = {DType.FLOAT: iec.IEC61850_FLOAT32, DType.INT: iec.IEC61850_INT32,
               DType.BOOL: iec.IEC61850_BOOLEAN}  # fmt: skip
# Policy refusal code -> (CheckHandlerResult, AddCause).
_REFUSALS = {
    "out_of_limits": (iec.CONTROL_VALUE_INVALID, iec.ADD_CAUSE_BLOCKED_BY_INTERLOCKING),
    "bad_type": (iec.CONTROL_VALUE_INVALID, iec.ADD_CAUSE_INCONSISTENT_PARAMETERS),
    "bad_value": (iec.CONTROL_VALUE_INVALID, iec.ADD_CAUSE_INCONSISTENT_PARAMETERS),
    "read_only": (iec.CONTROL_OBJECT_ACCESS_DENIED, iec.ADD_CAUSE_NOT_SUPPORTED),
    "unknown_point": (iec.CONTROL_OBJECT_UNDEFINED, iec.ADD_CAUSE_NOT_SUPPORTED),
    "no_route": (iec.CONTROL_OBJECT_ACCESS_DENIED, iec.ADD_CAUSE_NOT_SUPPORTED),
    "expired": (iec.CONTROL_TEMPORARILY_UNAVAILABLE, iec.ADD_CAUSE_TIME_LIMIT_OVER),
    "conflict": (iec.CONTROL_TEMPORARILY_UNAVAILABLE, iec.ADD_CAUSE_COMMAND_ALREADY_IN_EXECUTION),
    "link_down": (iec.CONTROL_TEMPORARILY_UNAVAILABLE, iec.ADD_CAUSE_BLOCKED_BY_PROCESS),
    "interlock": (iec.CONTROL_OBJECT_ACCESS_DENIED, iec.ADD_CAUSE_BLOCKED_BY_INTERLOCKING),
    "busy": (iec.CONTROL_TEMPORARILY_UNAVAILABLE, iec.ADD_CAUSE_COMMAND_ALREADY_IN_EXECUTION),
}
_UPDATE_CHUNK = 500  # updates per data model lock: bounds how long a control waits for the lock
_NO_VALUE = quality_to_mms(with_validity(GOOD, Validity.INVALID))

_CONTROL_REFS: dict[str, int] = {}  # control object reference -> id(server): one per process
_CONTROL_LOCK = threading.Lock()


class MmsServerError(GatewayError):
    """The MMS server cannot start: model, listener or a control object already served."""


def mms_reference(point: str) -> tuple[str, str]:
    """(MMS object reference, FC) of a twin point: 'VPP1.BAT02/MMXU1.TotW.mag.f' -> ('VPP1BAT02/...', 'MX')."""
    ld, rest = split_ref(point)
    parts = rest.split(".")
    fc = _FC_BY_FIRST_DA.get(parts[2] if len(parts) > 2 else "", "")
    return f"{mms_ld_name(ld)}/{rest}", fc


@dataclass(slots=True)
class _Served:
    """A served point: the attributes its value, quality and time go to."""

    ref: str
    dtype: DType
    leaves: list[tuple[Any, str]]  # (DataAttribute, kind: f | i | b | dbpos)
    q: Any
    t: Any


@dataclass
class _Control:
    """A controllable object and the command it is executing."""

    objref: str
    point: str
    cdc: str
    model: str
    future: concurrent.futures.Future[Any] | None = None
    started: float = 0.0
    cmd: Command | None = None
    last_reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)


class _Check(iec.CheckHandlerForPython):  # type: ignore[misc]
    """libiec61850's check handler: runs in the server thread with the data model locked."""

    def __init__(self, server: MmsServer, control: _Control) -> None:
        super().__init__()
        self._server, self._control = server, control

    def trigger(self) -> None:
        try:
            result = self._server._on_check(
                self._control,
                self._libiec61850_control_action,
                self._libiec61850_mms_value,
                bool(self._libiec61850_interlock_check),
            )
        except Exception:  # never unwind into libiec61850
            log.exception("MMS: check of %s failed", self._control.objref)
            result = iec.CONTROL_HARDWARE_FAULT
        self._libiec61850_check_handler_result = result


class _Operate(iec.ControlHandlerForPython):  # type: ignore[misc]
    """libiec61850's control handler: polled while it answers CONTROL_RESULT_WAITING."""

    def __init__(self, server: MmsServer, control: _Control) -> None:
        super().__init__()
        self._server, self._control = server, control

    def trigger(self) -> None:
        try:
            result = self._server._on_operate(
                self._control,
                self._libiec61850_control_action,
                self._libiec61850_mms_value,
                bool(self._libiec61850_test),
            )
        except Exception:
            log.exception("MMS: operate of %s failed", self._control.objref)
            result = iec.CONTROL_RESULT_FAILED
        self._libiec61850_control_handler_result = result


class MmsServer:
    """The twin's VPPs as one IEC 61850 IED on MMS: reports out, controls into the command path."""

    def __init__(
        self,
        config: MmsServerConfig,
        site: SiteConfig,
        twin: Twin,
        commands: CommandPath,
    ) -> None:
        self.config = config
        self.site = site
        self.twin = twin
        self.commands = commands
        self._served: dict[str, _Served] = {}
        self._controls: dict[str, _Control] = {}  # by object reference
        self._power_ref: dict[str, str] = {}  # control point -> its resource's P point
        self._model: Any = None
        self._server: Any = None
        self._keep: list[Any] = []  # SWIG proxies of model nodes, kept while the model lives
        self._subscribers: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._seq = 0
        self.counters: dict[str, int] = dict.fromkeys(
            ("updates", "batches", "resyncs", "checks", "refused", "operates", "executed",
             "failed", "test_operates"),
            0,
        )  # fmt: skip
        self.refusals: dict[str, int] = {}

    # --- public -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._task is not None

    def logical_devices(self) -> list[str]:
        """MMS names of the served logical devices."""
        return sorted({ref.split("/", 1)[0] for ref in (mms_reference(p)[0] for p in self._served)})

    def control_references(self) -> dict[str, str]:
        """Controllable object reference -> the twin point it commands."""
        return {c.objref: c.point for c in self._controls.values()}

    def stats(self) -> dict[str, Any]:
        """Counters, refusals by AddCause and open connections."""
        out: dict[str, Any] = dict(self.counters)
        out["refusals"] = dict(self.refusals)
        out["points"] = len(self._served)
        out["controls"] = len(self._controls)
        srv = self._server
        out["connections"] = iec.IedServer_getNumberOfOpenConnections(srv) if srv else 0
        return out

    async def start(self) -> None:
        """Build the model, fill it from the twin, listen and follow the twin."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mms-server")
        try:
            self._build()
            self._server = iec.IedServer_create(self._model)
            self._sub = self.twin.subscribe("mms-server", self.config.subscriber_queue)
            self._seq = self.twin.seq
            self._update(self._everything(), locked=False)  # not listening yet: no lock needed
            self._listen()
        except BaseException:
            await self._release()
            raise
        self._task = self._loop.create_task(self._run(), name="mms-server")
        log.info(
            "MMS server on %s:%d: %d logical devices, %d points, %d controls",
            self.config.host, self.config.port, len(self.logical_devices()), len(self._served),
            len(self._controls),
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop following the twin, stop listening, release the model; idempotent."""
        if self._sub is not None:  # ends the follow loop even if a cancellation were lost
            self.twin.unsubscribe(self._sub)
            self._sub = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._release()

    # --- building the model ------------------------------------------------------------------

    def _specs(self) -> list[tuple[str, PointSpec]]:
        cfg = self.config
        wanted = set(cfg.vpps) or {v.id for v in self.site.vpps}
        out: list[tuple[str, PointSpec]] = []
        for v in self.site.vpps:
            if v.id not in wanted:
                continue
            if cfg.resources:
                for r in v.all_resources():
                    p = r.ref(v.id, Role.P)
                    for s in r.point_specs(v.id):
                        out.append((v.id, s))
                        if p is not None and s.access == "rw":
                            self._power_ref[s.ref] = p
            if cfg.plant:
                out += [(v.id, s) for s in v.plant_specs()]
        missing = wanted - {v.id for v in self.site.vpps}
        if missing:
            raise MmsServerError(f"configured VPP(s) not in the site: {', '.join(sorted(missing))}")
        return out

    def _build(self) -> None:
        cfg = self.config
        by_ld: dict[str, dict[str, dict[str, list[PointSpec]]]] = {}
        names: dict[str, str] = {}
        for _vpp, s in self._specs():
            ld, rest = split_ref(s.ref)
            parts = rest.split(".")
            if len(parts) < 3:
                log.warning("MMS: %s names no data attribute: not served", s.ref)
                continue
            name = mms_ld_name(ld)
            if names.setdefault(name, ld) != ld:
                raise MmsServerError(f"logical devices {ld} and {names[name]} both become {name}")
            if len(name) > 64:
                raise MmsServerError(f"logical device name {name} is longer than 64 characters")
            by_ld.setdefault(ld, {}).setdefault(parts[0], {}).setdefault(parts[1], []).append(s)
        self._model = iec.IedModel_create(cfg.ied_name)
        for ld, lns in by_ld.items():
            self._build_ld(ld, lns)

    def _node(self, ref: str) -> Any:
        return iec.IedModel_getModelNodeByObjectReference(self._model, ref)

    def _build_ld(self, ld: str, lns: dict[str, dict[str, list[PointSpec]]]) -> None:
        cfg = self.config
        name = mms_ld_name(ld)
        dev = iec.LogicalDevice_createEx(name, self._model, name)
        lln0 = iec.LogicalNode_create("LLN0", dev)
        self._keep += [dev, lln0]
        members: list[str] = []
        for ln_name, dos in lns.items():
            ln = lln0 if ln_name == "LLN0" else iec.LogicalNode_create(ln_name, dev)
            self._keep.append(ln)
            for do_name, specs in dos.items():
                fc = self._build_do(name, ln, ln_name, do_name, specs)
                if fc:
                    members.append(f"{ln_name}${fc}${do_name}")
        ds = iec.DataSet_create(cfg.dataset, lln0)
        self._keep.append(ds)
        for m in members:
            self._keep.append(iec.DataSetEntry_create(ds, m, -1, None))
        opts = (
            iec.RPT_OPT_SEQ_NUM | iec.RPT_OPT_TIME_STAMP | iec.RPT_OPT_REASON_FOR_INCLUSION
            | iec.RPT_OPT_DATA_SET | iec.RPT_OPT_DATA_REFERENCE | iec.RPT_OPT_CONF_REV
        )  # fmt: skip
        for rc in cfg.reports:
            trg = 0
            for t in rc.trigger:
                trg |= _TRIGGERS[t]
            for k in range(1, rc.instances + 1):
                rcb = f"{rc.name}{k:02d}"
                rpt_id = f"{name}/LLN0.{'BR' if rc.buffered else 'RP'}.{rcb}"
                self._keep.append(
                    iec.ReportControlBlock_create(
                        rcb, lln0, rpt_id, rc.buffered, cfg.dataset, 1, trg,
                        opts | (iec.RPT_OPT_ENTRY_ID if rc.buffered else 0),
                        rc.buffer_time_ms, rc.integrity_period_ms,
                    )
                )  # fmt: skip

    def _build_do(
        self, ld: str, ln: Any, ln_name: str, do_name: str, specs: list[PointSpec]
    ) -> str | None:
        """Create a data object for the points under it; return the FC its data set entry uses."""
        base = f"{ld}/{ln_name}.{do_name}"
        rw = next((s for s in specs if s.access == "rw"), None)
        status: tuple[str, str, str] | None = None  # (status attribute, FC, CDC) of a control
        paths = {s.ref: ".".join(s.ref.split("/", 1)[1].split(".")[2:]) for s in specs}
        if rw is not None:
            status = self._build_control(base, ln, do_name, rw)
            fc = status[1]
        else:
            do = iec.DataObject_create(do_name, iec.toModelNode(ln), 0)
            self._keep.append(do)
            first = paths[specs[0].ref].split(".")[0]
            fc = _FC_BY_FIRST_DA.get(first, "MX" if specs[0].dtype == DType.FLOAT else "ST")
        leaves: dict[str, list[tuple[Any, str]]] = {}
        for s in specs:  # values first, then q and t: the order of IEC 61850-7-3 (mag, q, t)
            da_path = paths[s.ref].split(".")
            leaf = self._ensure(base, da_path, s.dtype, _FC_BY_FIRST_DA.get(da_path[0], fc))
            dbpos = status is not None and status[2] == "DPC" and paths[s.ref] == status[0]
            leaves[s.ref] = [(leaf, "dbpos" if dbpos else _kind(s.dtype))]
            # The control's status attribute shows the set-point too, unless a point of its own.
            if s is rw and status is not None and status[0] not in paths.values():
                st = iec.toDataAttribute(self._node(f"{base}.{status[0]}"))
                leaves[s.ref].append((st, "dbpos" if status[2] == "DPC" else _kind(s.dtype)))
        if rw is None:
            for attr, typ, trg in (("q", iec.IEC61850_QUALITY, iec.TRG_OPT_QUALITY_CHANGED),
                                   ("t", iec.IEC61850_TIMESTAMP, 0)):  # fmt: skip
                self._keep.append(
                    iec.DataAttribute_create(
                        attr, iec.toModelNode(do), typ, getattr(iec, f"IEC61850_FC_{fc}"), trg, 0, 0
                    )
                )
        q = self._node(f"{base}.q")
        t = self._node(f"{base}.t")
        for s in specs:
            self._served[s.ref] = _Served(
                s.ref,
                s.dtype,
                leaves[s.ref],
                iec.toDataAttribute(q) if q is not None else None,
                iec.toDataAttribute(t) if t is not None else None,
            )
        return fc

    def _ensure(self, base: str, path: list[str], dtype: DType, fc: str) -> Any:
        """The leaf attribute base.path, created (constructed parents included) when absent."""
        ref = base
        fc_code = getattr(iec, f"IEC61850_FC_{fc}")
        for i, name in enumerate(path):
            parent = ref
            ref = f"{ref}.{name}"
            if self._node(ref) is not None:
                continue
            leaf = i == len(path) - 1
            self._keep.append(
                iec.DataAttribute_create(
                    name,
                    self._node(parent),
                    _LEAF_TYPES[dtype] if leaf else iec.IEC61850_CONSTRUCTED,
                    fc_code,
                    iec.TRG_OPT_DATA_CHANGED,
                    0,
                    0,
                )
            )
        return iec.toDataAttribute(self._node(ref))

    def _build_control(
        self, objref: str, ln: Any, do_name: str, spec: PointSpec
    ) -> tuple[str, str, str]:
        """Create the controllable object; return (status attribute, its FC, CDC)."""
        cfg = self.config
        over = cfg.control_for(spec.ref)
        model = over.control_model if over else cfg.control_model
        cdc = over.cdc if over and over.cdc else {DType.FLOAT: "APC", DType.BOOL: "SPC",
                                                   DType.INT: "INC"}[spec.dtype]  # fmt: skip
        code = _MODEL_CODES[model]
        opts = code | iec.CDC_CTL_OPTION_ORIGIN | iec.CDC_CTL_OPTION_CTL_NUM
        if model.startswith("sbo"):
            opts |= iec.CDC_CTL_MODEL_HAS_CANCEL | iec.CDC_CTL_OPTION_ST_SELD
        parent = iec.toModelNode(ln)
        if cdc == "APC":
            do = iec.CDC_APC_create(do_name, parent, 0, opts, False)
            status = ("mxVal.f", "MX")
        elif cdc == "SPC":
            do = iec.CDC_SPC_create(do_name, parent, 0, opts)
            status = ("stVal", "ST")
        elif cdc == "DPC":
            do = iec.CDC_DPC_create(do_name, parent, 0, opts)
            status = ("stVal", "ST")
        else:
            do = iec.CDC_INC_create(do_name, parent, 0, opts)
            status = ("stVal", "ST")
        self._keep.append(do)
        if code:
            self._controls[objref] = _Control(objref, spec.ref, cdc, model)
        return (*status, cdc)

    def _listen(self) -> None:
        cfg = self.config
        with _CONTROL_LOCK:
            taken = [r for r in self._controls if r in _CONTROL_REFS]
            if taken:
                raise MmsServerError(
                    f"{len(taken)} control object(s) (e.g. {taken[0]}) are already served by "
                    "another MMS server in this process (pyiec61850 keeps one control handler "
                    "per object reference per process)"
                )
            for r in self._controls:
                _CONTROL_REFS[r] = id(self)
        for ref, ctl in self._controls.items():
            sub = iec.ControlSubscriberForPython()
            sub.setIedServer(self._server)
            sub.setControlObject(iec.toDataObject(self._node(ref)))
            check, operate = _Check(self, ctl), _Operate(self, ctl)
            sub.setCheckHandler(check)
            sub.setControlHandler(operate)
            check.__disown__()  # the subscriber deletes its handlers: C++ must own them
            operate.__disown__()
            self._subscribers.append(sub)
            if not sub.subscribe():
                raise MmsServerError(f"cannot install the control handlers of {ref}")
        iec.IedServer_setLocalIpAddress(self._server, cfg.host)
        iec.IedServer_start(self._server, cfg.port)
        if not iec.IedServer_isRunning(self._server):
            raise MmsServerError(f"MMS server cannot listen on {cfg.host}:{cfg.port}")

    async def _release(self) -> None:
        if self._sub is not None:
            self.twin.unsubscribe(self._sub)
            self._sub = None
        for ctl in self._controls.values():
            if ctl.future is not None:
                ctl.future.cancel()
        srv, self._server = self._server, None
        pool, self._pool = self._pool, None
        if srv is not None:
            # ctypes: the server thread may be waiting for the GIL in a handler while it stops.
            stop = native().server_stop
            if pool is not None:
                await asyncio.get_running_loop().run_in_executor(pool, stop, ptr(srv))
            else:
                stop(ptr(srv))
        for sub in self._subscribers:
            release_swig(sub, "delete_ControlSubscriberForPython")
        self._subscribers.clear()
        with _CONTROL_LOCK:
            for r in self._controls:
                if _CONTROL_REFS.get(r) == id(self):
                    del _CONTROL_REFS[r]
        if srv is not None:
            iec.IedServer_destroy(srv)
        if self._model is not None:
            iec.IedModel_destroy(self._model)
            self._model = None
        self._keep.clear()
        if pool is not None:
            pool.shutdown(wait=True)

    # --- monitor direction ----------------------------------------------------------------------

    def _everything(self) -> list[tuple[str, Value | None, int, float]]:
        read = self.twin.read(self._served)
        now = time.time()
        out: list[tuple[str, Value | None, int, float]] = []
        for ref, (value, quality) in read.items():
            s = self.twin.get(ref)
            out.append((ref, value, quality, s.ts if s is not None else now))
        return out

    async def _run(self) -> None:
        sub = self._sub
        loop = asyncio.get_running_loop()
        while sub is not None and not sub.closed:
            cs = await sub.get(timeout=1.0)
            if cs is None:
                continue
            batch = [cs, *sub.drain()]
            gap = False
            for c in batch:  # a gap: the subscription dropped change sets
                gap = gap or c.seq != self._seq + 1
                self._seq = c.seq
            if gap:
                self.counters["resyncs"] += 1
                items = self._everything()
            else:
                latest: dict[str, Sample] = {}
                for c in batch:
                    for s in c.changes:
                        if s[0] in self._served:
                            latest[s[0]] = s
                items = [(s[0], s[1], s[3], s[2]) for s in latest.values()]
            if items and self._pool is not None:
                await loop.run_in_executor(self._pool, self._update, items)

    def _update(
        self, items: Iterable[tuple[str, Value | None, int, float]], locked: bool = True
    ) -> None:
        """Write values, qualities and times into the model (worker thread, chunked locks)."""
        srv = self._server  # taken once: stop() clears it, and destroys it only after this ends
        if srv is None:
            return
        n = native()
        items = list(items)
        for start in range(0, len(items), _UPDATE_CHUNK):
            chunk = items[start : start + _UPDATE_CHUNK]
            if locked:
                n.lock_model(ptr(srv))
            try:
                for ref, value, quality, ts in chunk:
                    self._set(srv, self._served[ref], value, quality, ts)
            finally:
                if locked:
                    n.unlock_model(ptr(srv))
            self.counters["updates"] += len(chunk)
        self.counters["batches"] += 1

    @staticmethod
    def _set(srv: Any, s: _Served, value: Value | None, quality: int, ts: float) -> None:
        if value is None:
            q = _NO_VALUE  # the twin has no value yet: invalid
        else:
            q = quality_to_mms(quality)
            for da, kind in s.leaves:
                if kind == "f":
                    iec.IedServer_updateFloatAttributeValue(srv, da, float(value))
                elif kind == "i":
                    iec.IedServer_updateInt32AttributeValue(srv, da, int(value))
                elif kind == "b":
                    iec.IedServer_updateBooleanAttributeValue(srv, da, bool(value))
                else:
                    iec.IedServer_updateDbposValue(
                        srv, da, iec.DBPOS_ON if value else iec.DBPOS_OFF
                    )
        if s.q is not None:
            iec.IedServer_updateQuality(srv, s.q, q)
        if s.t is not None and value is not None:
            iec.IedServer_updateUTCTimeAttributeValue(srv, s.t, int(ts * 1000))

    # --- control direction (server thread) -------------------------------------------------------

    def _decode(self, ctl: _Control, v: Any) -> Value | None:
        t = iec.MmsValue_getType(v)
        if t == iec.MMS_STRUCTURE and iec.MmsValue_getArraySize(v) >= 1:  # AnalogueValue
            v = iec.MmsValue_getElement(v, 0)
            t = iec.MmsValue_getType(v)
        if ctl.cdc in ("SPC", "DPC"):
            return bool(iec.MmsValue_getBoolean(v)) if t == iec.MMS_BOOLEAN else None
        if t == iec.MMS_FLOAT:
            x = float(iec.MmsValue_toDouble(v))
            return x if ctl.cdc == "APC" else None
        if t in (iec.MMS_INTEGER, iec.MMS_UNSIGNED):
            n = int(iec.MmsValue_toInt64(v))
            return float(n) if ctl.cdc == "APC" else n
        return None

    def _refuse(self, ctl: _Control, action: Any, code: str, reason: str) -> int:
        result, cause = _REFUSALS.get(code, (iec.CONTROL_HARDWARE_FAULT, iec.ADD_CAUSE_UNKNOWN))
        iec.ControlAction_setAddCause(action, cause)
        name = ADD_CAUSES.get(cause, str(cause))
        self.counters["refused"] += 1
        self.refusals[name] = self.refusals.get(name, 0) + 1
        ctl.last_reason = f"{code}: {reason}"
        log.warning("MMS: control of %s refused (%s): %s", ctl.objref, name, reason)
        return int(result)

    def _on_check(self, ctl: _Control, action: Any, mms_value: Any, interlock: bool) -> int:
        """Decide a select or an operate at once: policy, route, link and interlocks."""
        self.counters["checks"] += 1
        if ctl.future is not None and not ctl.future.done():
            return self._refuse(ctl, action, "busy", "the previous command is still executing")
        value = None
        if mms_value is not None:
            value = self._decode(ctl, mms_value)
            if value is None:
                return self._refuse(ctl, action, "bad_type", f"ctlVal does not fit a {ctl.cdc}")
        spec = self.twin.specs.get(ctl.point)
        if value is not None:
            cmd = Command(
                ctl.point, value, "mms", deadline=time.time() + self.config.command_deadline_s
            )
            try:
                self.commands.check(cmd)
            except CommandRejected as e:
                return self._refuse(ctl, action, e.code, e.reason)
        elif spec is None or spec.access != "rw" or self.commands.owner(ctl.point) is None:
            return self._refuse(ctl, action, "no_route", f"no driver can write {ctl.point}")
        driver = self.commands.owner(ctl.point)
        if driver is not None and not driver.connected:
            return self._refuse(ctl, action, "link_down", f"driver {driver.id} is not connected")
        if interlock and self.config.interlock_needs_good_power:
            p = self._power_ref.get(ctl.point)
            got = self.twin.read([p]).get(p) if p else None
            if got is None or got[0] is None or got[1] != GOOD:
                return self._refuse(ctl, action, "interlock", f"the active power {p} is not good")
        return int(iec.CONTROL_ACCEPTED)

    def _on_operate(self, ctl: _Control, action: Any, mms_value: Any, test: bool) -> int:
        """Submit the command on the first call; answer from its record on the later ones."""
        if ctl.future is None:
            if test:
                # IEC 61850-7-2: a command with Test set is not executed by the process.
                self.counters["test_operates"] += 1
                return int(iec.CONTROL_RESULT_OK)
            value = self._decode(ctl, mms_value) if mms_value is not None else None
            loop = self._loop
            if value is None or loop is None or self._task is None:
                iec.ControlAction_setAddCause(action, iec.ADD_CAUSE_UNKNOWN)
                return int(iec.CONTROL_RESULT_FAILED)
            cmd = Command(
                ctl.point, value, "mms", deadline=time.time() + self.config.command_deadline_s
            )
            ctl.cmd, ctl.started = cmd, time.monotonic()
            ctl.future = asyncio.run_coroutine_threadsafe(self.commands.submit(cmd), loop)
            self.counters["operates"] += 1
            return int(iec.CONTROL_RESULT_WAITING)
        fut = ctl.future
        overdue = time.monotonic() - ctl.started > self.config.command_deadline_s + 1.0
        if not fut.done():
            if overdue:
                return self._finish(ctl, action, False, iec.ADD_CAUSE_TIME_LIMIT_OVER, "no answer")
            return int(iec.CONTROL_RESULT_WAITING)
        try:
            rec = fut.result()
        except CommandRejected as e:
            cause = _REFUSALS.get(e.code, (0, iec.ADD_CAUSE_UNKNOWN))[1]
            return self._finish(ctl, action, False, cause, e.reason)
        except BaseException as e:
            return self._finish(ctl, action, False, iec.ADD_CAUSE_UNKNOWN, repr(e))
        state = rec.state
        if state in (CommandState.SENT, CommandState.CONFIRMED):
            return self._finish(ctl, action, True, iec.ADD_CAUSE_UNKNOWN, str(state))
        if state == CommandState.FAILED:
            return self._finish(
                ctl, action, False, iec.ADD_CAUSE_BLOCKED_BY_PROCESS, rec.history[-1].reason
            )
        if state in (CommandState.TIMED_OUT, CommandState.UNKNOWN) or overdue:
            return self._finish(ctl, action, False, iec.ADD_CAUSE_TIME_LIMIT_OVER, str(state))
        return int(iec.CONTROL_RESULT_WAITING)

    def _finish(self, ctl: _Control, action: Any, ok: bool, cause: int, reason: str) -> int:
        ctl.future = None
        if ok:
            self.counters["executed"] += 1
            return int(iec.CONTROL_RESULT_OK)
        iec.ControlAction_setAddCause(action, cause)
        self.counters["failed"] += 1
        ctl.last_reason = reason
        log.warning("MMS: %s failed: %s", ctl.objref, reason)
        return int(iec.CONTROL_RESULT_FAILED)


def _kind(dtype: DType) -> str:
    return {DType.FLOAT: "f", DType.INT: "i", DType.BOOL: "b"}[dtype]
