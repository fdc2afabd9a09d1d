"""Progress of long work for a person watching it: done of total, rate and time left, reported on a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType


class Progress:
    """Reports `done()` of `total` every `every` seconds while the block runs, then once at its end.

    `done` is read, never driven: a Spark accumulator's value (it grows as tasks finish), a counter of batches.
    """

    def __init__(
        self, what: str, total: int, done: Callable[[], int], report: Callable[[str], None], every: float = 10.0
    ) -> None:
        self.what, self.total, self.done, self.report, self.every = what, total, done, report, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress of {what}", daemon=True)
        self._started = 0.0

    def line(self, done: int, elapsed: float) -> str:
        """One line a person reads: how many of how many, the rate, and the time left at that rate."""
        share = done / self.total if self.total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", about {(self.total - done) / rate:.0f} s left" if 0 < done < self.total else ""
        return f"{self.what}: {done:,} of {self.total:,} ({share:.0%}) in {elapsed:.0f} s, {rate:.1f}/s{left}"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.report(self.line(self.done(), time.perf_counter() - self._started))

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self.report(self.line(self.done(), time.perf_counter() - self._started))
