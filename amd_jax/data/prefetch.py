"""Read the batches of the next steps ahead, in grain's background threads, keeping the data a function of the step.

`StepPrefetch(read, threads, depth).get(step, batch_size)` returns `read(step, batch_size)`. Consecutive calls
(step, step + 1, ...) are served by one grain pipeline, `MapDataset.range(step, ...).map(read)
.to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))`, whose threads read up to `depth` steps ahead
while the device trains. Any other call (the first one, a resume, a jump, another batch size) starts a new pipeline
at that step, so what a step gets never depends on what was asked before: the checkpointed step stays the data
position. Only reading belongs here (file reads release the GIL); tokenizers and encoders run in the caller's thread.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")

_HORIZON = 1 << 40  # steps a pipeline covers from its first step (lazy: nothing is read beyond `depth` ahead)


class StepPrefetch(Generic[T]):
    def __init__(self, read: Callable[[int, int], T], threads: int = 2, depth: int = 4):
        if threads < 1 or depth < 1:
            raise ValueError(f"StepPrefetch needs threads >= 1 and depth >= 1, got {threads}, {depth}")
        self.read, self.threads, self.depth = read, int(threads), int(depth)
        self._iter, self._next = None, None  # the running pipeline and the (step, batch size) it yields next

    def _start(self, step: int, batch_size: int) -> None:
        import grain

        def read_step(s):
            return self.read(int(s), batch_size)

        ds = grain.MapDataset.range(step, step + _HORIZON).map(read_step)
        options = grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=self.depth)
        self.close()
        self._iter = iter(ds.to_iter_dataset(options))

    def get(self, step: int, batch_size: int) -> T:
        step, batch_size = int(step), int(batch_size)
        if self._next != (step, batch_size):
            self._start(step, batch_size)
        self._next = None  # a failed read leaves no pipeline to trust: the next call starts a new one
        out = next(self._iter)
        self._next = (step + 1, batch_size)
        return out

    def close(self) -> None:
        """Stop the running pipeline's threads (if the iterator can be closed) and drop it."""
        it, self._iter, self._next = self._iter, None, None
        if it is not None and hasattr(it, "close"):
            it.close()
