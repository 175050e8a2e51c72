"""Retrying calls to external systems according to a :class:`RetryPolicy` and the error taxonomy.

Why not DBOS's own step retries (``@DBOS.step(retries_allowed=True, ...)``)? In DBOS 3.4 the wait before a retry is
computed from the attempt number only (``interval * backoff_rate ** attempt``, capped at one hour), so it cannot
honour a target's ``Retry-After``; a rate-limit answer would also count as a failed attempt; the waits are plain
``time.sleep`` inside the step (not durable), and the final error is DBOS's ``DBOSMaxStepRetriesExceeded`` rather
than an error with our kind and code. Tenacity is not installed. So this is a small explicit loop:

- **In workflow code** (the normal case) every attempt is its own DBOS step and every wait is a durable
  ``DBOS.sleep``: after a crash, recorded attempts and finished waits replay instantly, an unfinished wait only
  waits for what is left, and the attempt count survives the restart.
- **Inside a step or outside any workflow** the loop runs in place with ``time.sleep``.

Rules: a :class:`TransientError` is retried with the policy's backoff (or the target's ``Retry-After`` when longer,
capped at ``max_interval_seconds``) up to ``max_attempts`` calls; a :class:`RateLimitedError` waits exactly
``retry_after`` (or the backoff when the target gives none) and does not count as a failed attempt, within the
policy's rate-limit budget; permanent,
validation and conflict errors are raised at once (with ``details["attempts"]``); when the policy gives up a
:class:`RetriesExhaustedError` (``LB-X001`` / ``LB-X002``) carrying ``attempts`` and ``last_error`` is raised.
Exceptions that :func:`~ledgerbridge.errors.classify_exception` recognises (httpx timeouts, connection errors,
``DomainError``) are converted first; anything else is a bug and propagates unchanged, never retried.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from dbos import DBOS

from ledgerbridge.errors import (
    LedgerbridgeError,
    RateLimitedError,
    RetriesExhaustedError,
    TransientError,
    classify_exception,
)
from ledgerbridge.runtime.settings import DEFAULT_RETRY_POLICY, RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("ledgerbridge.runtime.retry")


def _classified(fn: Callable[..., R], system: str) -> Callable[..., R]:
    """Wrap ``fn`` so classifiable exceptions leave it as LedgerbridgeErrors (recorded as such by DBOS)."""

    @functools.wraps(fn)
    def attempt(*args: Any, **kwargs: Any) -> R:
        try:
            return fn(*args, **kwargs)
        except LedgerbridgeError:
            raise
        except Exception as exc:
            err = classify_exception(exc, system=system)
            if err is None:
                raise
            raise err from exc

    return attempt


def call_with_policy(
    fn: Callable[..., R],
    policy: RetryPolicy,
    *args: Any,
    name: str | None = None,
    system: str = "unknown",
    **kwargs: Any,
) -> R:
    """Call ``fn(*args, **kwargs)`` under ``policy`` (see the module docstring for the rules).

    ``name`` names the checkpointed step (default: the function's qualified name; keep it stable); ``system``
    labels classified exceptions (e.g. ``"netsuite"``). In workflow code, ``fn``'s result must be plain JSON data
    like every checkpoint. ``name`` and ``system`` are taken by this function: pass ``fn``'s own keyword arguments
    of those names through ``functools.partial``.
    """
    step_name = name or getattr(fn, "__qualname__", "call")
    attempt_fn = _classified(fn, system)
    durable = DBOS.workflow_id is not None and DBOS.step_id is None

    def call() -> R:
        if durable:
            return DBOS.run_step({"name": step_name}, attempt_fn, *args, **kwargs)
        return attempt_fn(*args, **kwargs)

    def wait(seconds: float) -> None:
        if seconds <= 0:
            return
        if durable:
            DBOS.sleep(seconds)
        else:
            time.sleep(seconds)

    failures = 0  # failed attempts (transient)
    calls = 0
    rate_waits = 0
    rate_waited = 0.0
    while True:
        calls += 1
        try:
            return call()
        except RetriesExhaustedError:
            raise  # an inner policy already gave up
        except RateLimitedError as err:
            rate_waits += 1
            delay = err.retry_after if err.retry_after is not None else policy.backoff(rate_waits)
            remaining = policy.rate_limit_budget_seconds - rate_waited
            if rate_waits > policy.max_rate_limit_waits or delay > remaining:
                raise RetriesExhaustedError(
                    f"{step_name}: still rate limited after {rate_waits - 1} wait(s) totalling {rate_waited:g} s; "
                    f"the next wait ({delay:g} s) exceeds the policy's rate-limit budget "
                    f"({policy.max_rate_limit_waits} waits / {policy.rate_limit_budget_seconds:g} s) — reschedule "
                    f"after retry_after or raise the budget. Last answer: {err.message}",
                    attempts=calls,
                    last_error=err,
                    code="LB-X002",
                    retry_after=err.retry_after,
                    details={"step": step_name, "failed_attempts": failures, "rate_limit_waits": rate_waits - 1,
                             "rate_limit_waited_seconds": rate_waited},
                ) from err
            rate_waited += delay
            log.info("rate limited, waiting as told",
                     extra={"step": step_name, "wait_seconds": delay, "code": err.code, "rate_waits": rate_waits})
            wait(delay)
        except TransientError as err:
            failures += 1
            if failures >= policy.max_attempts:
                raise RetriesExhaustedError(
                    f"{step_name}: failed {failures} time(s) with transient errors (max_attempts="
                    f"{policy.max_attempts}); last error: {err.message} — check the target's availability and "
                    "replay the dead letter",
                    attempts=calls,
                    last_error=err,
                    code="LB-X001",
                    details={"step": step_name, "failed_attempts": failures, "rate_limit_waits": rate_waits,
                             "rate_limit_waited_seconds": rate_waited},
                ) from err
            delay = policy.backoff(failures)
            if err.retry_after is not None:  # e.g. 503 + Retry-After: honoured up to the policy's max interval
                delay = max(delay, min(err.retry_after, policy.max_interval_seconds))
            log.info("transient failure, retrying",
                     extra={"step": step_name, "wait_seconds": delay, "code": err.code, "attempt": failures})
            wait(delay)
        except LedgerbridgeError as err:
            err.details.setdefault("attempts", calls)
            raise


def with_retry(
    policy: RetryPolicy = DEFAULT_RETRY_POLICY, *, name: str | None = None, system: str = "unknown"
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator form of :func:`call_with_policy`: every call of the decorated function goes through the policy
    (as durable steps when called from workflow code)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        step_name = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return call_with_policy(fn, policy, *args, name=step_name, system=system, **kwargs)

        return wrapper

    return decorate
