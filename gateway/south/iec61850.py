"""IEC 61850 MMS client driver on libiec61850 (pyiec61850-ng): reports, reads, controls, reconnect.

Theory of operation. One supervisor task owns a session: a fresh IedConnection per attempt,
connected within connect_timeout_s; the controllable objects of writable points are created
(ControlObjectClient, which reads their ctlModel); every configured report control block is read,
its data set's directory and member layout learnt, a report handler installed and the block
enabled with a general interrogation; then every point is read once (the refresh after each
(re)connect), and from then on reports carry changes while points no enabled report carries are
polled every poll_interval_s. A watchdog checks the connection state every watchdog_s; when it is
lost, the points are marked not topical once, the session is torn down and the supervisor retries
with exponential backoff.

Threads and the GIL (measured with pyiec61850-ng 1.6.1, see DEPENDENCIES.md):

* pyiec61850's SWIG wrappers keep the GIL while they block. Reports arrive in libiec61850's
  connection thread, which takes the GIL to run our handler; when another thread blocks holding
  the GIL in a call whose answer that same connection thread must process, both wait: until the
  request timeout for a read, for ever for IedConnection_close (which joins the thread; seen in
  gdb). So every blocking call made while reports may arrive releases the GIL: reads, writes and
  report block access go through pyiec61850's pyWrap_* functions (they release it), and connect,
  close, destroy and the control services (operate, select, selectWithValue, cancel) are called
  through ctypes on the very libiec61850 that pyiec61850 loaded (ctypes releases the GIL). The
  SWIG calls left (variable specifications, data set directories, ControlObjectClient_create,
  installing report handlers) run before any report block is enabled: installing a handler
  takes the connection's report-handler mutex, which the connection thread holds while it
  waits for the GIL in a handler. All connection calls run in one worker thread.
* The report handler runs in the connection thread: it only copies values out of the report
  (ClientReport and MmsValue accessors, no I/O) and hands them to the loop with
  call_soon_threadsafe. An exception must never leave it (it would unwind into C).
* pyiec61850 keeps one report subscriber per RCB reference in a process-wide map; a second
  subscriber for the same reference replaces the installed handler and the first one's reports
  are lost. A subscriber deletes its handler when it dies, so the handler is handed over to C++
  (`__disown__`): left owned by Python it was freed twice and the process segfaulted. Subscribers
  are deleted explicitly, after the connection that called them is destroyed.

Quality: libiec61850 numbers validity invalid = 2 and reserved = 1 (the bit string read as an
integer), model.quality numbers them 1 and 2; the detail, source, test and operatorBlocked bits are
the same. quality_to_mms / quality_from_mms swap the two validity codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import glob
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import pyiec61850.pyiec61850 as iec

from gateway.errors import CommandRejected, DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from model.command import Command, CommandState
from model.drivers_iec61850 import IEC61850ClientDriverConfig, IEC61850PointMap
from model.quality import GOOD, VALIDITY_MASK
from model.sample import Sample, Value

__all__ = [
    "ADD_CAUSES",
    "IEC61850Driver",
    "Native",
    "mms_to_python",
    "native",
    "ptr",
    "quality_from_mms",
    "quality_to_mms",
    "release_swig",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: AddCause code -> name (IEC 61850-7-2, as libiec61850 numbers them).
ADD_CAUSES: dict[int, str] = {
    getattr(iec, n): n[len("ADD_CAUSE_") :].lower().replace("_", "-")
    for n in dir(iec)
    if n.startswith("ADD_CAUSE_")
}
_FC = {name: getattr(iec, f"IEC61850_FC_{name}") for name in ("ST", "MX", "SP", "SV", "CF", "DC",
       "SG", "SE", "SR", "OR", "BL", "EX", "CO")}  # fmt: skip
_DETAIL_BITS = 0x1FFC  # overflow .. operatorBlocked: the same bits in both numberings


# --- native calls that release the GIL -----------------------------------------------------------


class _LastApplError(ctypes.Structure):
    _fields_ = [("ctlNum", ctypes.c_int), ("error", ctypes.c_int), ("addCause", ctypes.c_int)]


def _library_path() -> str:
    """The libiec61850 shared library pyiec61850 loaded (found in this process's memory map)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                path = line.rsplit(" ", 1)[-1].strip()
                if "libiec61850" in os.path.basename(path) and ".so" in path:
                    return path
    except OSError:
        pass
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(iec.__file__)))
    for pattern in ("pyiec61850_ng.libs/libiec61850*.so*", "pyiec61850/libiec61850*.so*"):
        hits = sorted(glob.glob(os.path.join(pkg, pattern)))
        if hits:
            return hits[0]
    raise DriverError("cannot find the libiec61850 shared library that pyiec61850 loaded")


class Native:
    """libiec61850 entry points called through ctypes, which releases the GIL while they block."""

    def __init__(self) -> None:
        self.path = _library_path()
        lib = ctypes.CDLL(self.path)
        vp, ci = ctypes.c_void_p, ctypes.c_int

        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        self.connect = fn(
            "IedConnection_connect", None, vp, ctypes.POINTER(ci), ctypes.c_char_p, ci
        )
        self.close = fn("IedConnection_close", None, vp)
        self.destroy = fn("IedConnection_destroy", None, vp)
        self.operate = fn("ControlObjectClient_operate", ctypes.c_bool, vp, vp, ctypes.c_uint64)
        self.select = fn("ControlObjectClient_select", ctypes.c_bool, vp)
        self.select_with_value = fn("ControlObjectClient_selectWithValue", ctypes.c_bool, vp, vp)
        self.cancel = fn("ControlObjectClient_cancel", ctypes.c_bool, vp)
        self.last_appl_error = fn("ControlObjectClient_getLastApplError", _LastApplError, vp)
        self.lock_model = fn("IedServer_lockDataModel", None, vp)
        self.unlock_model = fn("IedServer_unlockDataModel", None, vp)
        self.server_stop = fn("IedServer_stop", None, vp)


@cache
def native() -> Native:
    """The process's one Native binding."""
    return Native()


def ptr(obj: Any) -> int:
    """The C address behind a pyiec61850 object (opaque handle or struct proxy)."""
    this = getattr(obj, "this", None)
    return int(this if this is not None else obj)


def release_swig(obj: Any, deleter: str) -> None:
    """Delete a Python-owned pyiec61850 object now (e.g. a subscriber), not whenever GC runs."""
    if obj is not None and getattr(obj, "thisown", False):
        getattr(iec._pyiec61850, deleter)(obj)


# --- values and quality -------------------------------------------------------------------------


def _swap_validity(q: int) -> int:
    v = q & VALIDITY_MASK
    return (q & ~VALIDITY_MASK) | ((v & 1) << 1) | ((v >> 1) & 1)


def quality_to_mms(q: int) -> int:
    """libiec61850 Quality of a model quality (IEC 61850-8-1 bit string read as an integer)."""
    return _swap_validity(q & (_DETAIL_BITS | VALIDITY_MASK))


def quality_from_mms(q: int) -> int:
    """Model quality of a libiec61850 Quality (the 'derived' bit has no model counterpart)."""
    return _swap_validity(q & (_DETAIL_BITS | VALIDITY_MASK))


def mms_to_python(v: Any) -> Value | None:
    """The number or boolean a leaf MmsValue holds (an AnalogueValue structure's first element)."""
    if v is None:
        return None
    t = iec.MmsValue_getType(v)
    if t == iec.MMS_FLOAT:
        return float(iec.MmsValue_toDouble(v))
    if t == iec.MMS_INTEGER:
        return int(iec.MmsValue_toInt64(v))
    if t == iec.MMS_UNSIGNED:
        return int(iec.MmsValue_toUint32(v))
    if t == iec.MMS_BOOLEAN:
        return bool(iec.MmsValue_getBoolean(v))
    if t == iec.MMS_BIT_STRING:
        if iec.MmsValue_getBitStringSize(v) == 2:  # Dbpos: intermediate 0, off 1, on 2, bad 3
            return int(iec.Dbpos_fromMmsValue(v))
        return int(iec.MmsValue_getBitStringAsInteger(v))
    if t == iec.MMS_STRUCTURE and iec.MmsValue_getArraySize(v) >= 1:
        return mms_to_python(iec.MmsValue_getElement(v, 0))
    return None


def _mms_quality(v: Any) -> int | None:
    """Model quality of a Quality bit string; None for anything else (a data-access error)."""
    # Quality_fromMmsValue reads the bits without checking the type: a data-access-error
    # value (a read of an attribute the IED lacks) made it crash.
    if v is None or iec.MmsValue_getType(v) != iec.MMS_BIT_STRING:
        return None
    return quality_from_mms(int(iec.Quality_fromMmsValue(v)))


def _mms_time(v: Any) -> float | None:
    if v is None or iec.MmsValue_getType(v) != iec.MMS_UTC_TIME:
        return None
    ms = int(iec.MmsValue_getUtcTimeInMs(v))
    return ms / 1000.0 if ms > 0 else None


# --- the driver ---------------------------------------------------------------------------------


_RCB_OWNERS: dict[str, str] = {}  # RCB reference -> driver id (pyiec61850's map is process-wide)
_RCB_LOCK = threading.Lock()


@dataclass(slots=True)
class _Member:
    """Where one point's value, quality or time sits in a report's data set values."""

    entry: int
    path: tuple[int, ...]
    point: int  # index into the driver's point list
    kind: str  # "v" | "q" | "t"


@dataclass
class _Rcb:
    ref: str
    rcb: Any
    rpt_id: str
    members: list[_Member]
    subscriber: Any = None
    enabled: bool = False


@dataclass
class _Session:
    con: Any
    controls: dict[int, Any] = field(default_factory=dict)  # point index -> ControlObjectClient
    models: dict[int, int] = field(default_factory=dict)  # point index -> ctlModel
    rcbs: list[_Rcb] = field(default_factory=list)
    templates: dict[int, Any] = field(default_factory=dict)  # point index -> MmsValue (writes)
    missing: set[tuple[int, str]] = field(default_factory=set)  # (point, q|t) absent on the IED
    covered: set[int] = field(default_factory=set)
    closed: bool = False  # set by teardown, in the worker thread


class _ReportHandler(iec.RCBHandler):  # type: ignore[misc]
    """Runs in libiec61850's connection thread: copy values out, hand them to the loop."""

    def __init__(
        self,
        members: list[_Member],
        deliver: Callable[[list[tuple[int, str, Any]], float | None], None],
        loop: asyncio.AbstractEventLoop,
        name: str,
    ) -> None:
        super().__init__()
        self._members = members
        self._deliver = deliver
        self._loop = loop
        self._name = name

    def trigger(self) -> None:
        try:
            rep = self._client_report
            values = iec.ClientReport_getDataSetValues(rep)
            if values is None:
                return
            size = iec.MmsValue_getArraySize(values)
            with_reason = iec.ClientReport_hasReasonForInclusion(rep)
            out: list[tuple[int, str, Any]] = []
            for m in self._members:
                if m.entry >= size:
                    continue
                if with_reason and (
                    iec.ClientReport_getReasonForInclusion(rep, m.entry)
                    == iec.IEC61850_REASON_NOT_INCLUDED
                ):
                    continue
                v = iec.MmsValue_getElement(values, m.entry)
                for i in m.path:
                    if v is None:
                        break
                    v = iec.MmsValue_getElement(v, i)
                if v is None:
                    continue
                if m.kind == "v":
                    out.append((m.point, "v", mms_to_python(v)))
                elif m.kind == "q":
                    q = _mms_quality(v)
                    if q is not None:
                        out.append((m.point, "q", q))
                else:
                    out.append((m.point, "t", _mms_time(v)))
            ts = None
            if iec.ClientReport_hasTimestamp(rep):
                ts = int(iec.ClientReport_getTimestamp(rep)) / 1000.0
            if out:
                self._loop.call_soon_threadsafe(self._deliver, out, ts)
        except RuntimeError:
            pass  # the loop is closed: the gateway is stopping
        except Exception:  # never unwind into libiec61850
            log.exception("iec61850 %s: report handling failed", self._name)


class IEC61850Driver(SouthDriver):
    """An IEC 61850 IED: reports and polls in, controls and writes out."""

    protocol = "iec61850"

    def __init__(self, config: IEC61850ClientDriverConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self._points: list[IEC61850PointMap] = list(config.points)
        self._index: dict[str, int] = {p.point: i for i, p in enumerate(self._points)}
        self._last: dict[int, tuple[Value, int, float]] = {}
        self._session: _Session | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._up = False
        self._marked_down = True
        self.counters: dict[str, int] = dict.fromkeys(
            ("samples", "reports", "reads", "connects", "reconnects", "operates", "selects",
             "writes", "errors", "rcbs_enabled"),
            0,
        )  # fmt: skip
        self.last_error = ""

    # --- SouthDriver ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor (connection proceeds in the background)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"iec61850-{self.id}"
            )
            self._task = asyncio.create_task(self._run(), name=f"iec61850 {self.id}")

    async def stop(self) -> None:
        """Disable reports, close the association and release every native object; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._link_down()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    @property
    def connected(self) -> bool:
        """True while the association is up and set up."""
        return self._up

    def monitored_points(self) -> set[str]:
        """Every mapped point (writable ones are read back)."""
        return {p.point for p in self._points}

    def command_points(self) -> set[str]:
        """Points mapped with a command."""
        return {p.point for p in self._points if p.writable}

    def stats(self) -> dict[str, Any]:
        """Counters, enabled report blocks and the last error."""
        out = super().stats()
        s = self._session
        out.update(
            where=self.config.where,
            reports_enabled=[r.ref for r in s.rcbs if r.enabled] if s else [],
            last_error=self.last_error,
            **self.counters,
        )
        return out

    async def execute(self, cmd: Command, report: Report) -> None:
        """Operate (select first where the model says so) or write; SENT once the IED accepted."""
        i = self._index.get(cmd.target)
        pm = self._points[i] if i is not None else None
        if pm is None or i is None or not pm.writable:
            raise CommandRejected(f"{cmd.target!r} is not writable through {self.id}", "no_route")
        s = self._session
        if not self._up or s is None:
            raise LinkDown(f"driver {self.id}: not connected to {self.config.where}")
        raw: Value
        if isinstance(cmd.value, bool):
            raw = cmd.value
        else:
            raw = (float(cmd.value) - pm.offset) / pm.scale
            if not math.isfinite(raw):
                raise CommandRejected(
                    f"{cmd.target}: {cmd.value} is not a finite number", "bad_value"
                )
        if pm.command == "write":
            await self._call(self._write, s, i, pm, raw)
            self.counters["writes"] += 1
            report(CommandState.SENT, f"{pm.ref} [{pm.fc}] <- {raw!r}")
            return
        if i not in s.controls:
            raise DeviceError(
                f"driver {self.id}: {pm.control_ref} is not a controllable object of the IED"
            )
        model = s.models.get(i, 0)
        sbo = pm.select_before_operate if pm.select_before_operate is not None else model in (2, 4)
        if sbo:
            await self._call(self._control, s, i, pm, raw, "select")
            self.counters["selects"] += 1
            report(CommandState.SELECTED, f"{pm.control_ref} selected")
        await self._call(self._control, s, i, pm, raw, "operate")
        self.counters["operates"] += 1
        report(CommandState.SENT, f"{pm.control_ref} operated with {raw!r}")

    # --- blocking work (worker thread) ------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop, pool = self._loop, self._pool
        if loop is None or pool is None:
            raise LinkDown(f"driver {self.id}: stopped")
        return await loop.run_in_executor(pool, fn, *args)

    def _control_error(self, co: Any, what: str) -> DeviceError:
        lae = native().last_appl_error(ptr(co))
        err = iec.ControlObjectClient_getLastError(co)
        cause = ADD_CAUSES.get(lae.addCause, str(lae.addCause))
        self.counters["errors"] += 1
        return DeviceError(
            f"driver {self.id}: {what} refused by the IED: {iec.IedClientError_toString(err)}"
            f" (AddCause {lae.addCause} {cause})"
        )

    def _control(self, s: _Session, i: int, pm: IEC61850PointMap, raw: Value, what: str) -> None:
        """Select or operate (worker thread; the session is checked here, where teardown runs)."""
        if s.closed:
            raise LinkDown(f"driver {self.id}: the association with {self.config.where} ended")
        co = s.controls[i]
        value = _ctl_value(co, raw, pm)
        n = native()
        try:
            if what == "operate":
                ok = n.operate(ptr(co), ptr(value), 0)
            elif s.models.get(i, 0) == 4:  # sbo-with-enhanced-security: SBOw carries the value
                ok = n.select_with_value(ptr(co), ptr(value))
            else:
                ok = n.select(ptr(co))
        finally:
            iec.MmsValue_delete(value)
        if not ok:
            raise self._control_error(co, f"{what} of {pm.control_ref}")

    def _write(self, s: _Session, i: int, pm: IEC61850PointMap, raw: Value) -> None:
        if s.closed:
            raise LinkDown(f"driver {self.id}: the association with {self.config.where} ended")
        template = s.templates.get(i)
        if template is None:
            raise DeviceError(f"driver {self.id}: {pm.ref} [{pm.fc}] was never read: type unknown")
        v = iec.MmsValue_clone(template)
        try:
            _set_value(v, raw, pm)
            _, err = iec.pyWrap_IedConnection_writeObject(s.con, pm.ref, _FC[pm.fc], v)
        finally:
            iec.MmsValue_delete(v)
        if err != iec.IED_ERROR_OK:
            self.counters["errors"] += 1
            raise DeviceError(
                f"driver {self.id}: write of {pm.ref} [{pm.fc}] refused: {iec.IedClientError_toString(err)}"
            )

    def _open(self) -> _Session:
        """Connect and set up controls and report blocks (nothing is enabled yet)."""
        cfg = self.config
        con = iec.IedConnection_create()
        s = _Session(con)
        self._session = s
        iec.IedConnection_setConnectTimeout(con, int(cfg.connect_timeout_s * 1000))
        iec.IedConnection_setRequestTimeout(con, int(cfg.timeout_s * 1000))
        err = ctypes.c_int(0)
        native().connect(ptr(con), ctypes.byref(err), cfg.host.encode(), cfg.port)
        if err.value != iec.IED_ERROR_OK:
            raise LinkDown(
                f"driver {self.id}: cannot connect to {cfg.where}: {iec.IedClientError_toString(err.value)}"
            )
        for i, pm in enumerate(self._points):
            if pm.command != "operate":
                continue
            try:
                co = iec.ControlObjectClient_create(pm.control_ref, con)
            except RuntimeError:  # pyiec61850 raises on NULL: no such object, or not controllable
                co = None
            if co is None:
                log.warning("iec61850 %s: %s is not a controllable object", self.id, pm.control_ref)
                continue
            iec.ControlObjectClient_setOrigin(co, cfg.originator, cfg.originator_category)
            s.controls[i] = co
            s.models[i] = int(iec.ControlObjectClient_getControlModel(co))
        specs: dict[tuple[str, str], Any] = {}
        try:
            for ref in cfg.reports:
                rcb = self._prepare_rcb(s, ref, specs)
                if rcb is not None:
                    s.rcbs.append(rcb)
        finally:
            for spec in specs.values():
                if spec is not None:
                    iec.MmsVariableSpecification_destroy(spec)
        return s

    def _prepare_rcb(self, s: _Session, ref: str, specs: dict[tuple[str, str], Any]) -> _Rcb | None:
        try:
            blank = iec.ClientReportControlBlock_create(ref)
        except RuntimeError:
            log.warning("iec61850 %s: %s is not a report control block reference", self.id, ref)
            return None
        rcb, err = iec.pyWrap_IedConnection_getRCBValues(s.con, ref, blank)
        if err != iec.IED_ERROR_OK or rcb is None:
            iec.ClientReportControlBlock_destroy(blank)
            log.warning(
                "iec61850 %s: report block %s: %s", self.id, ref, iec.IedClientError_toString(err)
            )
            return None
        ds = iec.ClientReportControlBlock_getDataSetReference(rcb) or ""
        ds = ds.replace("$", ".")
        lst, err = iec.IedConnection_getDataSetDirectory(s.con, ds, None)
        entries: list[tuple[str, str]] = []
        if err == iec.IED_ERROR_OK and lst is not None:
            e = iec.LinkedList_getNext(lst)
            while e:
                text = iec.toCharP(e.data)
                ref_, _, fc = text.rstrip("]").partition("[")
                entries.append((ref_, fc))
                e = iec.LinkedList_getNext(e)
            iec.LinkedList_destroy(lst)
        else:
            log.warning("iec61850 %s: data set %s of %s: %s", self.id, ds, ref,
                        iec.IedClientError_toString(err))  # fmt: skip
        members: list[_Member] = []
        for i, pm in enumerate(self._points):
            for kind, mref in (("v", pm.ref), ("q", pm.q_ref), ("t", pm.t_ref)):
                m = self._locate(s, entries, mref, pm.fc, specs)
                if m is not None:
                    members.append(_Member(m[0], m[1], i, kind))
        rpt_id = iec.ClientReportControlBlock_getRptId(rcb) or ""
        return _Rcb(ref, rcb, rpt_id, members)

    @staticmethod
    def _locate(
        s: _Session,
        entries: list[tuple[str, str]],
        ref: str,
        fc: str,
        specs: dict[tuple[str, str], Any],
    ) -> tuple[int, tuple[int, ...]] | None:
        """(entry index, element path) of attribute `ref` [fc] in a data set's values."""
        for n, (eref, efc) in enumerate(entries):
            if efc != fc or not (ref == eref or ref.startswith(eref + ".")):
                continue
            if ref == eref:
                return n, ()
            key = (eref, efc)
            if key not in specs:
                spec, err = iec.IedConnection_getVariableSpecification(s.con, eref, _FC[efc])
                specs[key] = spec if err == iec.IED_ERROR_OK else None
            spec = specs[key]
            path: list[int] = []
            for name in ref[len(eref) + 1 :].split("."):
                if spec is None:
                    break
                spec, idx = iec.MmsVariableSpecification_getChildSpecificationByName(spec, name)
                path.append(int(idx))
            if spec is not None:
                return n, tuple(path)
        return None

    def _subscribe(self, s: _Session, loop: asyncio.AbstractEventLoop) -> None:
        """Install every report handler, then enable the blocks.

        In that order: installing a handler (a SWIG call, GIL held) takes the connection's
        report-handler mutex, which the connection thread holds while a report of an already
        enabled block waits for the GIL in our handler. Once a block is enabled, no handler is
        installed or removed until the connection is closed.
        """
        cfg = self.config
        installed: list[_Rcb] = []
        for r in s.rcbs:
            with _RCB_LOCK:
                owner = _RCB_OWNERS.get(r.ref)
                if owner is not None:
                    log.error(
                        "iec61850 %s: %s is already subscribed by driver %s in this process "
                        "(pyiec61850 keeps one report handler per report block reference)",
                        self.id, r.ref, owner,
                    )  # fmt: skip
                    continue
                _RCB_OWNERS[r.ref] = self.id
            handler = _ReportHandler(r.members, self._on_report, loop, self.id)
            sub = iec.RCBSubscriber()
            sub.setIedConnection(s.con)
            sub.setRcbReference(r.ref)
            sub.setRcbRptId(r.rpt_id)
            sub.setEventHandler(handler)
            handler.__disown__()  # the subscriber deletes it: C++ must own it
            r.subscriber = sub
            if sub.subscribe():
                installed.append(r)
            else:
                log.error("iec61850 %s: cannot install the report handler of %s", self.id, r.ref)
        for r in installed:
            mask = iec.RCB_ELEMENT_RPT_ENA
            iec.ClientReportControlBlock_setRptEna(r.rcb, True)
            if cfg.integrity_period_ms:
                iec.ClientReportControlBlock_setIntgPd(r.rcb, cfg.integrity_period_ms)
                mask |= iec.RCB_ELEMENT_INTG_PD
            _, err = iec.pyWrap_IedConnection_setRCBValues(s.con, r.rcb, mask, True)
            if err != iec.IED_ERROR_OK:
                log.warning(
                    "iec61850 %s: cannot enable %s: %s", self.id, r.ref,
                    iec.IedClientError_toString(err),
                )  # fmt: skip
                continue
            r.enabled = True
            self.counters["rcbs_enabled"] += 1
            s.covered.update(m.point for m in r.members if m.kind == "v")

    def _interrogate(self, s: _Session) -> None:
        for r in s.rcbs:
            if r.enabled and self.config.general_interrogation:
                iec.ClientReportControlBlock_setGI(r.rcb, True)
                iec.pyWrap_IedConnection_setRCBValues(s.con, r.rcb, iec.RCB_ELEMENT_GI, True)

    def _read(self, s: _Session, which: list[int]) -> list[Sample]:
        """Read value, quality and time of the given points (pyWrap reads release the GIL)."""
        out: list[Sample] = []
        now = time.time()
        for i in which:
            pm = self._points[i]
            fc = _FC[pm.fc]
            v, err = iec.pyWrap_IedConnection_readObject(s.con, pm.ref, fc)
            self.counters["reads"] += 1
            if err != iec.IED_ERROR_OK or v is None:
                if err in (iec.IED_ERROR_CONNECTION_LOST, iec.IED_ERROR_NOT_CONNECTED):
                    raise LinkDown(f"driver {self.id}: {iec.IedClientError_toString(err)}")
                log.warning("iec61850 %s: read %s [%s]: %s", self.id, pm.ref, pm.fc,
                            iec.IedClientError_toString(err))  # fmt: skip
                continue
            try:
                raw = mms_to_python(v)
                if raw is not None and pm.command == "write" and i not in s.templates:
                    s.templates[i] = iec.MmsValue_clone(v)  # the type a write must match
            finally:
                iec.MmsValue_delete(v)
            if raw is None:
                continue
            quality, ts = GOOD, now
            for kind, ref in (("q", pm.q_ref), ("t", pm.t_ref)):
                if (i, kind) in s.missing:
                    continue
                x, err = iec.pyWrap_IedConnection_readObject(s.con, ref, fc)
                if err != iec.IED_ERROR_OK or x is None:
                    s.missing.add((i, kind))
                    continue
                try:
                    got = _mms_quality(x) if kind == "q" else _mms_time(x)
                finally:
                    iec.MmsValue_delete(x)
                if got is None:  # e.g. a data-access-error value: the IED has no such attribute
                    s.missing.add((i, kind))
                elif kind == "q":
                    quality = int(got)
                else:
                    ts = float(got)
            out.append(self._sample(i, raw, quality, ts))
        return out

    def _teardown(self, s: _Session, graceful: bool) -> None:
        """Release the session: close (GIL released), destroy clients, then the subscribers."""
        s.closed = True
        n = native()
        if graceful:
            for r in s.rcbs:
                if r.enabled:
                    iec.ClientReportControlBlock_setRptEna(r.rcb, False)
                    iec.pyWrap_IedConnection_setRCBValues(
                        s.con, r.rcb, iec.RCB_ELEMENT_RPT_ENA, True
                    )
        n.close(ptr(s.con))
        for co in s.controls.values():
            iec.ControlObjectClient_destroy(co)
        s.controls.clear()
        for r in s.rcbs:
            iec.ClientReportControlBlock_destroy(r.rcb)
        for v in s.templates.values():
            iec.MmsValue_delete(v)
        s.templates.clear()
        n.destroy(ptr(s.con))
        for r in s.rcbs:
            release_swig(r.subscriber, "delete_RCBSubscriber")
            r.subscriber = None
            with _RCB_LOCK:
                if _RCB_OWNERS.get(r.ref) == self.id:
                    del _RCB_OWNERS[r.ref]
        s.rcbs.clear()

    # --- supervisor --------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        while True:
            served = False
            try:
                served = await self._serve()
            except asyncio.CancelledError:
                raise
            except DriverError as e:
                self.last_error = str(e)
                log.info("iec61850 %s: %s", self.id, e)
            except Exception as e:  # a bug must not stop the supervisor
                self.counters["errors"] += 1
                self.last_error = repr(e)
                log.exception("iec61850 %s: session failed", self.id)
            self._link_down()
            if served:
                delay = cfg.reconnect_min_s
            await asyncio.sleep(delay)
            if not served:
                delay = min(delay * 2, cfg.reconnect_max_s)

    async def _serve(self) -> bool:
        cfg = self.config
        loop = asyncio.get_running_loop()
        graceful = False
        try:
            s = await self._call(self._open)
            await self._call(self._subscribe, s, loop)
            self._apply(await self._call(self._read, s, list(range(len(self._points)))))
            await self._call(self._interrogate, s)
            if self.counters["connects"]:
                self.counters["reconnects"] += 1
            self.counters["connects"] += 1
            self._up, self._marked_down = True, False
            log.info("iec61850 %s: connected to %s, %d report block(s) enabled", self.id,
                     cfg.where, sum(r.enabled for r in s.rcbs))  # fmt: skip
            uncovered = [i for i in range(len(self._points)) if i not in s.covered]
            next_poll = time.monotonic() + cfg.poll_interval_s
            while True:
                await asyncio.sleep(cfg.watchdog_s)
                if iec.IedConnection_getState(s.con) != iec.IED_STATE_CONNECTED:
                    log.warning("iec61850 %s: association with %s lost", self.id, cfg.where)
                    return True
                if uncovered and cfg.poll_interval_s and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + cfg.poll_interval_s
                    self._apply(await self._call(self._read, s, uncovered))
        except asyncio.CancelledError:
            graceful = True
            raise
        finally:
            self._up = False
            s2, self._session = self._session, None
            if s2 is not None:
                self._link_down()
                pool = self._pool
                if pool is not None:
                    # Serialized after any call still running in the worker thread.
                    fut = pool.submit(self._teardown, s2, graceful)
                    with contextlib.suppress(Exception):
                        await asyncio.shield(asyncio.wrap_future(fut))

    # --- samples ------------------------------------------------------------------------------

    def _sample(self, i: int, raw: Value, quality: int, ts: float) -> Sample:
        pm = self._points[i]
        value: Value
        if isinstance(raw, int) and pm.scale == 1 and pm.offset == 0:
            value = raw  # booleans and integers stay what they are when not scaled
        else:
            value = float(raw) * pm.scale + pm.offset
        self._last[i] = (value, quality, ts)
        return Sample(pm.point, value, ts, quality, self.id)

    def _on_report(self, items: list[tuple[int, str, Any]], report_ts: float | None) -> None:
        """Loop thread: turn what a report carried into Samples."""
        self.counters["reports"] += 1
        if not self._up and self._session is None:
            return
        got: dict[int, dict[str, Any]] = {}
        for i, kind, v in items:
            got.setdefault(i, {})[kind] = v
        now = time.time()
        out: list[Sample] = []
        for i, parts in got.items():
            last = self._last.get(i)
            raw = parts.get("v")
            quality = parts.get("q", last[1] if last else GOOD)
            ts = parts.get("t") or report_ts or now
            if raw is None:
                if last is None:
                    continue
                out.append(Sample(self._points[i].point, last[0], ts, quality, self.id))
                self._last[i] = (last[0], quality, ts)
                continue
            out.append(self._sample(i, raw, quality, ts))
        self._apply(out)

    def _apply(self, samples: list[Sample]) -> None:
        if samples:
            self.counters["samples"] += len(samples)
            self.sink.apply(samples)

    def _link_down(self) -> None:
        self._up = False
        if not self._marked_down:
            self._marked_down = True
            self.sink.mark_not_topical(self.monitored_points(), self.id)


def _ctl_value(co: Any, raw: Value, pm: IEC61850PointMap) -> Any:
    """The ctlVal MmsValue for a control object (the caller deletes it)."""
    t = iec.ControlObjectClient_getCtlValType(co)
    if t == iec.MMS_BOOLEAN:
        return iec.MmsValue_newBoolean(bool(raw))
    if t in (iec.MMS_INTEGER, iec.MMS_UNSIGNED):
        if isinstance(raw, float) and not raw.is_integer():
            raise CommandRejected(
                f"{pm.control_ref} takes integers: {raw} does not fit", "bad_value"
            )
        if t == iec.MMS_UNSIGNED:
            return iec.MmsValue_newUnsignedFromUint32(int(raw))
        return iec.MmsValue_newIntegerFromInt32(int(raw))
    if t in (iec.MMS_FLOAT, iec.MMS_STRUCTURE):
        # An APC's ctlVal is an AnalogueValue structure; libiec61850 wraps the float itself.
        return iec.MmsValue_newFloat(float(raw))
    raise CommandRejected(f"{pm.control_ref}: control value type {t} is not supported", "bad_type")


def _set_value(v: Any, raw: Value, pm: IEC61850PointMap) -> None:
    t = iec.MmsValue_getType(v)
    if t == iec.MMS_FLOAT:
        iec.MmsValue_setDouble(v, float(raw))
    elif t == iec.MMS_INTEGER:
        iec.MmsValue_setInt64(v, round(float(raw)))
    elif t == iec.MMS_UNSIGNED:
        iec.MmsValue_setUint32(v, round(float(raw)))
    elif t == iec.MMS_BOOLEAN:
        iec.MmsValue_setBoolean(v, bool(raw))
    elif t == iec.MMS_STRUCTURE and iec.MmsValue_getArraySize(v) >= 1:
        _set_value(iec.MmsValue_getElement(v, 0), raw, pm)
    else:
        raise CommandRejected(f"{pm.ref}: attribute type {t} cannot be written", "bad_type")
