"""The GPUs of a real server, through NVML (`nvidia-ml-py`, the `[gpu]` extra).

Every NVML query a GPU does not support (or a driver too old to have) yields None, or 0 for a
counter, instead of an exception: a burn-in must not die because a PCIe card has no NVLink or a
field is missing on one generation. A GPU whose required readings fail for any other reason
(GPU_IS_LOST, unknown error) did not answer: it is left out of that sample, which is how a GPU
falling off the bus shows in telemetry.

XIDs: one event set registered for `nvmlEventTypeXidCriticalError` on every GPU and polled with
a zero timeout. Where registration is refused (containers without the capability, some vGPU and
WSL setups) `xid_supported` is False: the platform cannot deliver XIDs and the run says so.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any

from linetrace.schemas.bodies import GpuSample, Thresholds

from ..errors import StationError
from .backend import GemmResult, GpuInfo, PlatformInfo, StressReport, XidEvent
from .sku import sku_of_device_name
from .stress import DEFAULT_SIZE, GemmStress, available_engine

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*\Z")
# Errors meaning "this GPU/driver has no such query", not "this GPU stopped answering".
_ABSENT = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND",
           "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_INVALID_ARGUMENT", "NVML_ERROR_NOT_FOUND")
_FIELD_VALUE = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
                6: "usVal"}


class _NoAnswer(Exception):
    """A required reading of one GPU failed: leave the GPU out of this sample."""


def load_nvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise StationError(
            "the NVML burn-in backend needs nvidia-ml-py: pip install 'linetrace[gpu]' "
            "(or use --backend sim)", code="burnin.no_nvml") from None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return s.strip() or None


class NvmlBackend:
    """A `GpuBackend` over every GPU NVML sees; the stress load is a bit-exact GEMM loop."""

    def __init__(self, *, nvml: Any | None = None, stress: bool = True,
                 gemm_size: int = DEFAULT_SIZE) -> None:
        self._nvml = nvml if nvml is not None else load_nvml()
        n = self._nvml
        try:
            n.nvmlInit()
            count = int(n.nvmlDeviceGetCount())
            self._handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except n.NVMLError as e:
            raise StationError(f"NVML is not usable on this machine ({e}); is the NVIDIA "
                               "driver loaded? (`nvidia-smi`)", code="burnin.nvml_unavailable"
                               ) from None
        self._absent = {getattr(n, name) for name in _ABSENT if hasattr(n, name)}
        self._counters: dict[int, dict[str, int | None]] = {}
        self._links: dict[int, list[int]] = {}
        self._info = [self._gpu_info(i, h) for i, h in enumerate(self._handles)]
        self._slowdown = self._threshold("NVML_TEMPERATURE_THRESHOLD_SLOWDOWN")
        self._events: Any = None
        self._xid_ok = self._register_xids()
        self._engine = available_engine() if stress else None
        self._gemm_size = gemm_size
        self._stress: GemmStress | None = None

    # --- NVML access --------------------------------------------------------------------

    def _q(self, fn: str, *args: Any, required: bool = False) -> Any:
        """Call an NVML function; None where unsupported. `required`: other errors -> _NoAnswer."""
        f = getattr(self._nvml, fn, None)
        if f is None:
            return None
        try:
            return f(*args)
        except self._nvml.NVMLError as e:
            if getattr(e, "value", None) in self._absent or not required:
                return None
            raise _NoAnswer(f"{fn}: {e}") from None

    def _const(self, name: str, default: int = 0) -> int:
        return int(getattr(self._nvml, name, default))

    def _gpu_info(self, i: int, h: Any) -> GpuInfo:
        uuid = _text(self._q("nvmlDeviceGetUUID", h)) or f"GPU-index-{i}"
        serial = _text(self._q("nvmlDeviceGetSerial", h))
        if serial is None or not _ID.match(serial):
            serial = uuid  # GPUs without a readable serial (N/A) are known by their UUID
        gen = self._q("nvmlDeviceGetMaxPcieLinkGeneration", h)
        width = self._q("nvmlDeviceGetMaxPcieLinkWidth", h)
        return GpuInfo(index=i, serial=serial, uuid=uuid,
                       board_pn=_text(self._q("nvmlDeviceGetBoardPartNumber", h)),
                       pcie_gen_max=int(gen) if gen else None,
                       pcie_width_max=int(width) if width else None)

    def _threshold(self, name: str) -> float | None:
        if not self._handles or not hasattr(self._nvml, name):
            return None
        v = self._q("nvmlDeviceGetTemperatureThreshold", self._handles[0], self._const(name))
        return float(v) if v else None

    def _register_xids(self) -> bool:
        n = self._nvml
        if not self._handles:
            return False
        try:
            self._events = n.nvmlEventSetCreate()
        except n.NVMLError as e:
            log.warning("NVML event set not available (%s): this platform cannot deliver XIDs", e)
            return False
        ok = True
        for i, h in enumerate(self._handles):
            try:
                n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, self._events)
            except n.NVMLError as e:
                log.warning("GPU %d: XID events cannot be registered (%s)", i, e)
                ok = False
        return ok

    # --- GpuBackend ---------------------------------------------------------------------

    @property
    def xid_supported(self) -> bool:
        return self._xid_ok

    @property
    def stress_available(self) -> bool:
        return self._engine is not None

    def inventory(self) -> list[GpuInfo]:
        return list(self._info)

    def platform(self) -> PlatformInfo:
        if not self._handles:
            return PlatformInfo(None, None, None, None, None)
        h0 = self._handles[0]
        name = _text(self._q("nvmlDeviceGetName", h0))
        sku = sku_of_device_name(name) if name else None
        if sku is None and name:
            sku = re.sub(r"[^A-Za-z0-9._:/-]+", "-", name).strip("-") or None
        vbios = sorted({v for h in self._handles
                        if (v := _text(self._q("nvmlDeviceGetVbiosVersion", h)))})
        shutdown = self._threshold("NVML_TEMPERATURE_THRESHOLD_SHUTDOWN")
        max_op = self._threshold("NVML_TEMPERATURE_THRESHOLD_GPU_MAX")
        limit = self._q("nvmlDeviceGetEnforcedPowerLimit", h0)
        return PlatformInfo(
            sku=sku, driver=_text(self._q("nvmlSystemGetDriverVersion")),
            vbios=",".join(vbios) or None, power_limit_w=limit / 1000 if limit else None,
            thresholds=Thresholds(slowdown_c=self._slowdown, shutdown_c=shutdown,
                                  max_operating_c=max_op)
            if self._slowdown is not None and shutdown is not None else None)

    def sample(self, *, counters: bool = True) -> list[GpuSample]:
        out = []
        for info, h in zip(self._info, self._handles, strict=True):
            try:
                out.append(self._sample_one(info, h, counters))
            except _NoAnswer as e:
                log.warning("GPU %d (%s) did not answer: %s", info.index, info.serial, e)
        return out

    def _sample_one(self, info: GpuInfo, h: Any, counters: bool) -> GpuSample:
        temp = self._temperature(h)
        margin = self._q("nvmlDeviceGetMarginTemperature", h)
        if margin is None and self._slowdown is not None:
            margin = self._slowdown - temp
        power = self._q("nvmlDeviceGetPowerUsage", h, required=True)
        util = self._q("nvmlDeviceGetUtilizationRates", h)
        reasons = self._q("nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is None:
            reasons = self._q("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        if counters or info.index not in self._counters:
            self._counters[info.index] = self._read_counters(info.index, h)
        sm = self._q("nvmlDeviceGetClockInfo", h, self._const("NVML_CLOCK_SM", 1))
        mem = self._q("nvmlDeviceGetClockInfo", h, self._const("NVML_CLOCK_MEM", 2))
        gen = self._q("nvmlDeviceGetCurrPcieLinkGeneration", h)
        width = self._q("nvmlDeviceGetCurrPcieLinkWidth", h)
        c = self._counters[info.index]
        return GpuSample(
            gpu_index=info.index, gpu_serial=info.serial, gpu_uuid=info.uuid, temp_c=temp,
            mem_temp_c=self._memory_temperature(h),
            temp_margin_c=float(margin) if margin is not None else None,
            power_w=round((power or 0) / 1000, 3), sm_clock_mhz=float(sm or 0),
            mem_clock_mhz=float(mem or 0),
            util_pct=float(min(100, max(0, util.gpu))) if util is not None else 0.0,
            clocks_event_reasons=int(reasons or 0),
            pcie_gen=int(gen) if gen is not None else None,
            pcie_width=int(width) if width is not None else None,
            ecc_sbe_vol=c["ecc_sbe_vol"] or 0, ecc_dbe_vol=c["ecc_dbe_vol"] or 0,
            remap_unc=c["remap_unc"] or 0, remap_pending=c["remap_pending"] or 0,
            remap_failed=c["remap_failed"] or 0, pcie_replay=c["pcie_replay"] or 0,
            nvlink_crc=c["nvlink_crc"] or 0, nvlink_recovery=c["nvlink_recovery"] or 0,
            nvlink_links_up=c["nvlink_links_up"])

    def _temperature(self, h: Any) -> float:
        sensor = self._const("NVML_TEMPERATURE_GPU", 0)
        t = self._q("nvmlDeviceGetTemperatureV", h, sensor, required=True)
        if t is None:
            t = self._q("nvmlDeviceGetTemperature", h, sensor, required=True)
        if t is None:
            raise _NoAnswer("no GPU temperature reading")
        return float(t)

    def _memory_temperature(self, h: Any) -> float | None:
        field = getattr(self._nvml, "NVML_FI_DEV_MEMORY_TEMP", None)
        if field is None:
            return None
        values = self._q("nvmlDeviceGetFieldValues", h, [field])
        if not values or values[0].nvmlReturn != 0:
            return None
        v = getattr(values[0].value, _FIELD_VALUE.get(int(values[0].valueType), "uiVal"))
        return float(v) if v else None  # 0 means "no sensor" on boards without HBM sensors

    def _read_counters(self, index: int, h: Any) -> dict[str, int | None]:
        volatile = self._const("NVML_VOLATILE_ECC", 0)
        sbe = self._q("nvmlDeviceGetTotalEccErrors", h,
                      self._const("NVML_MEMORY_ERROR_TYPE_CORRECTED", 0), volatile)
        dbe = self._q("nvmlDeviceGetTotalEccErrors", h,
                      self._const("NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1), volatile)
        remap = self._q("nvmlDeviceGetRemappedRows", h) or (None, None, None, None)
        links = self._nvlinks(index, h)
        up = crc = recovery = 0
        for link in links:
            up += self._q("nvmlDeviceGetNvLinkState", h, link) == 1
            for counter in ("NVML_NVLINK_ERROR_DL_CRC_FLIT", "NVML_NVLINK_ERROR_DL_CRC_DATA"):
                crc += self._q("nvmlDeviceGetNvLinkErrorCounter", h, link,
                               self._const(counter)) or 0
            recovery += self._q("nvmlDeviceGetNvLinkErrorCounter", h, link,
                                self._const("NVML_NVLINK_ERROR_DL_RECOVERY", 1)) or 0
        return {"ecc_sbe_vol": sbe, "ecc_dbe_vol": dbe, "remap_unc": remap[1],
                "remap_pending": remap[2], "remap_failed": remap[3],
                "pcie_replay": self._q("nvmlDeviceGetPcieReplayCounter", h),
                "nvlink_crc": crc, "nvlink_recovery": recovery,
                "nvlink_links_up": up if links else None}

    def _nvlinks(self, index: int, h: Any) -> list[int]:
        """The NVLink link ids this GPU has (probed once; none on PCIe cards)."""
        if index not in self._links:
            top = self._const("NVML_NVLINK_MAX_LINKS", 18)
            self._links[index] = [link for link in range(top)
                                  if self._q("nvmlDeviceGetNvLinkState", h, link) is not None]
        return self._links[index]

    def xid_events(self) -> list[XidEvent]:
        n, out = self._nvml, list[XidEvent]()
        if self._events is None:
            return out
        while len(out) < 1000:
            try:
                data = n.nvmlEventSetWait(self._events, 0)
            except n.NVMLError as e:
                if getattr(e, "value", None) != self._const("NVML_ERROR_TIMEOUT", 10):
                    log.warning("polling XID events failed: %s", e)
                break
            if not int(data.eventType) & int(n.nvmlEventTypeXidCriticalError):
                continue
            index = self._q("nvmlDeviceGetIndex", data.device)
            index = int(index) if index is not None else 0
            xid = int(data.eventData)
            out.append(XidEvent(gpu_index=index, xid=xid,
                                raw=f"NVML XidCriticalError: Xid {xid} on GPU {index}"))
        return out

    def start_load(self) -> None:
        if self._engine is None or self._stress is not None:
            return
        self._stress = GemmStress(list(range(len(self._handles))), size=self._gemm_size,
                                  engine=self._engine)
        self._stress.start()

    def stop_load(self) -> StressReport:
        if self._engine is None:
            return StressReport(available=False, note="no stress load: neither cupy nor torch "
                                "with CUDA is importable (pip install 'linetrace[gpu]')")
        if self._stress is None:
            return StressReport(available=True, engine=self._engine, note="no load was started")
        results: list[GemmResult] = self._stress.stop()
        self._stress = None
        return StressReport(available=True, engine=self._engine, gpus=results)

    def close(self) -> None:
        if self._stress is not None:
            self.stop_load()
        n = self._nvml
        if self._events is not None:
            try:
                n.nvmlEventSetFree(self._events)
            except n.NVMLError:
                pass
            self._events = None
        try:
            n.nvmlShutdown()
        except n.NVMLError:
            pass
