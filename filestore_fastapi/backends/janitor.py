"""Janitor: clean-ups that failed, tried again later, after their request has ended.

An abort sent while the store is unreachable fails; left there, the unfinished multipart
upload is billed forever. The janitor keeps such a clean-up and retries it with
exponential back-off in a daemon thread of its own (one per storage, started on first
need), until it succeeds or ``give_up_after`` passes; then it logs what is left.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("filestore_fastapi")


@dataclass(order=True)
class _Job:
    due: float
    order: int
    description: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)
    attempt: int = field(compare=False, default=0)
    started: float = field(compare=False, default_factory=time.monotonic)


class Janitor:
    """Retries blocking clean-up actions: first after ``first_delay`` seconds, doubling up
    to ``max_delay``, for at most ``give_up_after`` seconds."""

    def __init__(
        self, name: str, *, first_delay: float = 1.0, max_delay: float = 60.0, give_up_after: float = 3600.0
    ) -> None:
        self._name = name
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self._jobs: list[_Job] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def retry(self, description: str, action: Callable[[], None]) -> None:
        """Try ``action`` again later (it failed once already); ``description`` is for the log."""
        job = _Job(time.monotonic() + self.first_delay, next(self._order), description, action)
        with self._wakeup:
            heapq.heappush(self._jobs, job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._wakeup.notify()

    @property
    def pending(self) -> int:
        """Clean-ups still waiting for their next attempt."""
        with self._wakeup:
            return len(self._jobs)

    def _work(self) -> None:
        while True:
            with self._wakeup:
                while not self._jobs or self._jobs[0].due > time.monotonic():
                    timeout = self._jobs[0].due - time.monotonic() if self._jobs else None
                    self._wakeup.wait(timeout)
                job = heapq.heappop(self._jobs)
            try:
                job.action()
            except Exception:
                job.attempt += 1
                if time.monotonic() - job.started > self.give_up_after:
                    logger.exception("gave up cleaning up %s; see Storage.cleanup()", job.description)
                    continue
                delay = min(self.first_delay * 2**job.attempt, self.max_delay)
                logger.warning("cleaning up %s failed again; next try in %.0f s", job.description, delay)
                with self._wakeup:
                    job.due = time.monotonic() + delay
                    heapq.heappush(self._jobs, job)
            else:
                logger.info("cleaned up %s", job.description)
