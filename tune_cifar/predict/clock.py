"""Start-up timing, measured from the import of tune_cifar.predict (before torch is imported)."""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # start-up is measured from here (before torch is imported)


class Clock:
    """Seconds from the import of this module to the end of the first batch, and in all."""

    def __init__(self):
        self.first_batch_s: float | None = None

    def batch_done(self) -> None:
        if self.first_batch_s is None:
            self.first_batch_s = round(time.perf_counter() - _T0, 3)

    def as_dict(self) -> dict:
        return {"startup_to_first_batch_s": self.first_batch_s, "total_s": round(time.perf_counter() - _T0, 3)}
