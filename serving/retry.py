"""Bounded retries of model-server requests: exponential backoff with jitter.

Only failures that a later try may cure are retried (the client's errors with ``retryable``:
UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED), so a restarted or briefly overloaded server
costs time, not images; a bad input or an unknown model fails at once. Retry ``n`` (0 first) waits
a random time in ``[cap / 2, cap]`` with ``cap = min(max_delay, base_delay * 2 ** n)``: the
exponential growth stops hammering a server that is down, the jitter keeps many workers that lost
the server together from retrying in lockstep, and the half that is not random guarantees that the
attempts span at least :meth:`RetryPolicy.shortest_wait` seconds, long enough to ride out a
restart. The defaults (8 attempts, 0.5 s doubling up to 10 s) span 17.75 to 35.5 s of waiting,
more than TF Serving or ``binmap-serve`` needs to restart and load the model.

Why not gRPC's own retry policy (a channel service config): it allows at most 5 attempts, counts
the deadline over all attempts together (so a DEADLINE_EXCEEDED is never retried), and its tries
are invisible in the error a user reads; here each attempt has the whole ``timeout`` and the
message says how many attempts were made and for how long.

Pure Python (no TensorFlow, no gRPC), so that command lines can add the options cheaply.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

DEFAULT_ATTEMPTS = 8
DEFAULT_BASE_DELAY = 0.5  # seconds before the first retry (at most; at least half of it)
DEFAULT_MAX_DELAY = 10.0  # seconds: the longest wait between two attempts
_MAX_DOUBLINGS = 60  # 2**60 times any base delay is beyond every max_delay; avoids float overflow


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is sent again after a retryable failure.

    ``attempts`` counts every try (1: no retry); ``base_delay`` and ``max_delay`` (seconds) bound
    the backoff, see the module docstring. A request then ends within ``attempts * timeout +
    longest_wait()`` seconds, whatever the server does.
    """

    attempts: int = DEFAULT_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry attempts must be at least 1 (1: no retry), got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"retry delays need 0 <= base delay <= max delay, got base {self.base_delay} s "
                             f"and max {self.max_delay} s")

    def cap(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0 for the first)."""
        return min(self.max_delay, self.base_delay * 2 ** min(retry, _MAX_DOUBLINGS))

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry``: uniform in ``[cap / 2, cap]``."""
        cap = self.cap(retry)
        return cap / 2 + rng.uniform(0, cap / 2)

    def longest_wait(self) -> float:
        """Seconds slept, at most, over all attempts of one request."""
        return sum(self.cap(retry) for retry in range(self.attempts - 1))

    def shortest_wait(self) -> float:
        """Seconds slept, at least, before a request gives up: the outage it is sure to ride out."""
        return self.longest_wait() / 2


NO_RETRY = RetryPolicy(attempts=1)


def _seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def _attempts(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (1: no retry), got {value}")
    return value


def add_retry_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--retry-attempts``, ``--retry-base-delay`` and ``--retry-max-delay`` (see :class:`RetryPolicy`)."""
    group = parser.add_argument_group(
        "retries of model-server requests",
        "a request that fails with UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED is sent again after an "
        "exponentially growing, jittered wait; other failures are not retried")
    group.add_argument("--retry-attempts", type=_attempts, default=DEFAULT_ATTEMPTS, metavar="N",
                       help="tries per request, the first included; 1 turns retries off (default: %(default)s)")
    group.add_argument("--retry-base-delay", type=_seconds, default=DEFAULT_BASE_DELAY, metavar="SECONDS",
                       help="wait before the first retry, doubled for each next one (default: %(default)s)")
    group.add_argument("--retry-max-delay", type=_seconds, default=DEFAULT_MAX_DELAY, metavar="SECONDS",
                       help="longest wait between two tries (default: %(default)s)")


def retry_policy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RetryPolicy:
    """The :class:`RetryPolicy` of parsed ``args``; a bad combination exits through ``parser.error``."""
    try:
        return RetryPolicy(args.retry_attempts, args.retry_base_delay, args.retry_max_delay)
    except ValueError as error:
        parser.error(f"{error}: give --retry-max-delay at least --retry-base-delay")
