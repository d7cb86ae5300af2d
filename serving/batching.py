"""Server-side batching for the loopback server: one bounded queue, batches of equal-sized images.

Like TF Serving's ``--enable_batching`` (same option names as ``batching_parameters.txt``),
concurrent requests of one signature and one image size are concatenated into one forward pass
of at most ``max_batch_size`` images; a partial batch waits at most ``batch_timeout_micros`` for
more. Batches run one at a time per batch thread: TensorFlow already spreads one forward pass
over every CPU core, so passes run side by side only contend for them (issue 14: 8 clients
sending 321x481 images concurrently waited 2.6-19.8 s each), while taking turns in a queue
gives every request about (requests ahead + 1) x one pass. The queue holds at most
``max_enqueued_batches * max_batch_size`` images; past that :meth:`BatchScheduler.submit`
raises :class:`QueueFullError` at once (the server answers RESOURCE_EXHAUSTED) rather than
letting requests wait beyond any client's deadline. Requests whose client has gone (deadline
passed, call cancelled) are dropped from the queue without running.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Outputs = dict[str, np.ndarray]


class QueueFullError(RuntimeError):
    """The batching queue is full; the request was not queued and may be retried later."""


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's batching parameters, with defaults for the loopback server on a CPU.

    ``max_enqueued_batches=8`` queues at most 64 images: about 28 s of work for 321x481 images
    at the ~0.44 s a pass takes on 2 idle cores, so a request that finds the queue full-but-one
    is still answered within the client's default deadline (:data:`serving.client.DEFAULT_TIMEOUT`,
    30 s); a longer queue would mostly hold requests whose clients have given up.
    """

    max_batch_size: int = 8  # images per merged forward pass
    batch_timeout_micros: int = 5000  # a partial batch waits this long for more (small next to a pass)
    max_enqueued_batches: int = 8  # queue bound, in batches of max_batch_size images
    num_batch_threads: int = 1  # batches computed at once; 1 on a CPU (see the module docstring)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")

    @property
    def queue_capacity(self) -> int:
        """Images the queue holds before refusing requests."""
        return self.max_enqueued_batches * self.max_batch_size


@dataclass(eq=False)
class _Task:
    """One queued request: its inputs, how many images and pixels it holds, and its answer."""

    signature: str
    image_shape: tuple[int, int]
    inputs: dict[str, np.ndarray]
    size: int
    pixels: int
    is_active: Callable[[], bool]
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, tuple[int, int]]:
        """Requests with equal keys may share a batch."""
        return self.signature, self.image_shape


class BatchScheduler:
    """Queue requests, merge equal-sized ones, and compute them with ``run(signature, inputs)``.

    ``max_pixels`` bounds a merged batch as it bounds a single request (each request is checked
    against it before :meth:`submit`), so batching never needs more memory than the largest
    allowed request.
    """

    def __init__(self, run: Callable[[str, dict[str, np.ndarray]], Outputs], options: BatchingOptions,
                 max_pixels: int) -> None:
        self.run = run
        self.options = options
        self.max_pixels = max_pixels
        self._queue: deque[_Task] = deque()
        self._queued_images = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.batches_run = 0  # forward passes, and the images they held: their ratio is the mean batch size
        self.images_run = 0

    @property
    def queued_images(self) -> int:
        """Images waiting in the queue (not counting the batch being computed)."""
        with self._condition:
            return self._queued_images

    def submit(self, signature: str, image_shape: tuple[int, int], inputs: dict[str, np.ndarray], size: int,
               pixels: int, is_active: Callable[[], bool] = lambda: True) -> Future:
        """Queue a request of ``size`` images; its future gives the request's rows of the outputs.

        Raises :class:`QueueFullError` when the queue cannot take ``size`` more images (a request
        larger than the whole queue is still taken when the queue is empty).
        """
        task = _Task(signature, image_shape, inputs, size, pixels, is_active)
        capacity = self.options.queue_capacity
        with self._condition:
            if self._stopping:
                raise QueueFullError("the server is shutting down; send the request to another server")
            if self._queued_images and self._queued_images + size > capacity:
                raise QueueFullError(
                    f"the server's queue is full ({self._queued_images} images waiting, limit {capacity} = "
                    f"--max-enqueued-batches {self.options.max_enqueued_batches} x --max-batch-size "
                    f"{self.options.max_batch_size}); retry after a short wait, spread the load over more "
                    "servers, or start this one with a larger --max-enqueued-batches")
            self._queue.append(task)
            self._queued_images += size
            self._condition.notify_all()
        return task.future

    # -- worker threads --------------------------------------------------------------------
    def start(self) -> None:
        """Start the batch threads (``num_batch_threads``)."""
        with self._condition:
            self._stopping = False
        for number in range(self.options.num_batch_threads):
            thread = threading.Thread(target=self._work, name=f"batch-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Finish the batch in progress, fail the queued requests and end the batch threads."""
        with self._condition:
            self._stopping = True
            dropped, self._queue = list(self._queue), deque()
            self._queued_images = 0
            self._condition.notify_all()
        for task in dropped:
            task.future.set_exception(QueueFullError("the server shut down before running the request; retry"))
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._compute(batch)

    def _next_batch(self) -> list[_Task] | None:
        """Wait for the next batch: the oldest request plus queued ones of the same key that fit."""
        timeout = self.options.batch_timeout_micros / 1e6
        with self._condition:
            while True:
                self._drop_inactive()
                if self._stopping:
                    return None
                if not self._queue:
                    self._condition.wait()
                    continue
                batch, full = self._fitting(self._queue[0].key)
                remaining = timeout - (time.monotonic() - batch[0].queued_at)  # TF Serving times from the oldest
                if full or remaining <= 0:
                    for task in batch:
                        self._queue.remove(task)
                        self._queued_images -= task.size
                    return batch
                self._condition.wait(remaining)

    def _fitting(self, key: tuple[str, tuple[int, int]]) -> tuple[list[_Task], bool]:
        """Queued requests with ``key``, oldest first, that fit one batch; and whether it is full."""
        batch: list[_Task] = []
        size = pixels = 0
        for task in self._queue:
            if task.key != key:
                continue
            if batch and (size + task.size > self.options.max_batch_size or pixels + task.pixels > self.max_pixels):
                return batch, True  # the next one does not fit: waiting cannot add more
            batch.append(task)
            size, pixels = size + task.size, pixels + task.pixels
        return batch, size >= self.options.max_batch_size

    def _drop_inactive(self) -> None:
        """Remove requests whose client has gone, so no pass is spent on them."""
        for task in [task for task in self._queue if not task.is_active()]:
            self._queue.remove(task)
            self._queued_images -= task.size
            task.future.cancel()

    def _compute(self, batch: list[_Task]) -> None:
        """Run ``batch`` as one pass and hand each request its rows; never raises."""
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {name: np.concatenate([task.inputs[name] for task in batch]) for name in batch[0].inputs}
            outputs = self.run(batch[0].signature, inputs)
            self.batches_run += 1
            self.images_run += sum(task.size for task in batch)
        except Exception as error:  # noqa: BLE001 - the error belongs to the requests, not to this thread
            if len(batch) > 1:  # one bad request (a corrupt file) must not fail the others
                for task in batch:
                    self._compute([task])
            else:
                batch[0].future.set_exception(error)
            return
        start = 0
        for task in batch:
            task.future.set_result({name: value[start:start + task.size] for name, value in outputs.items()})
            start += task.size
