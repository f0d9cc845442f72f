"""A single background thread that consumes queued items, for writers that must not stall
the model (annotated videos, run outputs)."""

from __future__ import annotations

import queue
import threading
from typing import Any


class BackgroundWorker:
    """Runs ``_handle(item)`` for each submitted item in one daemon thread, in order.

    ``_submit`` blocks when ``queue_size`` items are waiting, so memory stays flat. After an
    error the thread drops the remaining items, and the error is raised again by the next
    ``_submit`` or by ``_finish``. Subclasses set their own state, then call ``__init__``.
    """

    def __init__(self, name: str, queue_size: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _handle(self, item: Any) -> None:
        raise NotImplementedError

    def _submit(self, item: Any) -> None:
        self._raise_pending()
        self._queue.put(item)

    def _finish(self) -> None:
        """Wait until every queued item is handled (the thread then ends)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                self._handle(item)
            except BaseException as err:  # noqa: BLE001 - handed to the submitting thread
                self._error = err
