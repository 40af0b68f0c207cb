"""Peak memory of a benchmark case: the kernel's RSS high-water mark, reset before the case."""

from __future__ import annotations

import ctypes
import gc
import threading

import torch

from sst2.system import current_rss_mb


def _malloc_trim() -> None:
    """Hand freed heap back to the OS so one case's leftovers do not sit in the next one's baseline."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory of the code run inside ``with``.

    On CPU the peak is the process RSS high-water mark: the kernel's VmHWM after resetting it (exact),
    or else the maximum of RSS sampled every millisecond by a thread. ``delta_mb`` is the peak minus the
    RSS at entry (weights and inputs are already loaded then), i.e. what the case itself needed:
    activations, gradients, optimizer state, workspace. On CUDA the allocator's peak is also read.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.method = ""
        self.baseline_mb = self.peak_mb = self.delta_mb = 0.0
        self.cuda_mb: float | None = None
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self._samples.append(proc.memory_info().rss / 2**20)
            self._stop.wait(0.001)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        _malloc_trim()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.baseline_mb = current_rss_mb()
        if _reset_rss_peak():
            self.method = "VmHWM"
        else:
            self.method = "sampled"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "VmHWM":
            self.peak_mb = _status_kib("VmHWM") / 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._samples + [current_rss_mb()])
        self.delta_mb = max(0.0, self.peak_mb - self.baseline_mb)
        if self.device == "cuda":
            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20
