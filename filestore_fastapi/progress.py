"""Progress of one file: the ``progress`` hook, called every ``progress_interval`` bytes.

Counted in bytes, not seconds, so that the hook's rate follows the data and a test (or a
client) can predict its calls; a clock read per chunk would cost more than the compare.
The caller passes every new total; only a total that crosses the next mark awaits the
hook, so a chunk costs one integer comparison.
"""

from __future__ import annotations

from .config import Config
from .policy import UploadContext, call_hook


class Progress:
    """Calls ``config.progress(context, received)`` each time ``received`` passes a whole
    multiple of ``progress_interval`` bytes, and once more at the end of the file."""

    __slots__ = ("_config", "_context", "_next", "_reported")

    def __init__(self, config: Config, context: UploadContext, received: int = 0) -> None:
        self._config = config
        self._context = context
        self._reported = received
        self._next = self._mark_after(received) if config.progress is not None else -1

    def _mark_after(self, received: int) -> int:
        # Marks at whole intervals, so an upload resumed in small pieces still crosses them.
        interval = self._config.progress_interval
        return (received // interval + 1) * interval

    def due(self, received: int) -> bool:
        """Whether ``received`` (the file's bytes so far) calls for the hook: the hot check."""
        return 0 <= self._next <= received

    async def report(self, received: int) -> None:
        """Call the hook with ``received`` (when it is due, or at the end of the file)."""
        hook = self._config.progress
        if hook is None or received == self._reported:
            return
        self._reported = received
        self._next = self._mark_after(received)
        await call_hook(hook, self._context, received)
