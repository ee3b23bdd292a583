"""Keeping something held while the holder works: a thread that renews it (a merge lease
under a long upload, a finisher's claim under a long evaluation) until the work is over.

Both used to expire under slow work: the merge lease (5 s) under every 180 MB push, so the
merge and upload were redone; the finish claim (60 s) under a long final evaluation, so a
second finisher evaluated again (issue 26, finding 12)."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Keeper:
    """`with Keeper(renew, every):` calls renew() every `every` seconds from a daemon thread
    while the block runs. A renewal that raises is logged and tried again next time: the
    holder's work goes on, and at worst what it holds expires as it would have without one."""

    def __init__(self, renew, every: float, at_most: float | None = None):
        """at_most: stop renewing after this many seconds (a holder hung for that long
        should lose what it holds, as if it had died)."""
        self.renew, self.every = renew, every
        self.deadline = None if at_most is None else time.monotonic() + at_most
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bpt-keeper")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.deadline is not None and time.monotonic() > self.deadline:
                log.warning("stopped renewing after the deadline: the holder is hung or far too slow")
                return
            try:
                self.renew()
            except Exception:
                log.warning("renewal failed", exc_info=True)

    def __enter__(self) -> "Keeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)
