"""The evaluation runner: assess a dataset concurrently over one or more model
endpoints, writing every Assessment to the store as soon as it is done.

* Requests are spread over replicas: each image goes to the endpoint with the
  fewest images in flight, so N servers (or a data-parallel deployment behind
  N URLs) give up to N times the throughput.
* One image never stops the run: whatever an image, a model reply or a server
  does, the image ends as a stored row, with a score or with a classified failure
  (``error_kind``: image, model, client, server, timeout, internal; see
  :mod:`tooliqa.failures`). Internal errors (bugs) go to the ``tooliqa.eval``
  logger with their traceback. Requests are retried by the chat model itself
  (transient failures, jittered backoff, ``Retry-After``); each image has a
  wall-clock ``deadline``.
* Re-running the same command resumes: finished images are skipped; ``server`` and
  ``timeout`` failures are tried again (every failure with ``retry_failed``).
* Two evaluations of the same run on one database never assess the same image at
  once: each image is claimed in the store first (a claim lapses when its process
  dies).
* Each image's attribute labels (``Sample.attributes``) are stored with its
  result, so the report can compare them with the predicted attribute scores
  (a context with ``attribute_scores=True``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tooliqa.api import DEFAULT_DEADLINE, aassess
from tooliqa.failures import classify, retry_delay
from tooliqa.graph import Assessment, Context
from tooliqa.graph.nodes import backend_name

from .datasets import Dataset, Sample
from .store import ResultStore

__all__ = ["Progress", "RunSummary", "make_run_id", "run_dataset"]


def make_run_id(method: str, dataset: str, settings: dict[str, Any]) -> str:
    """A stable id: the same method, dataset and settings resume the same run."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :10
    ]
    return f"{method}:{dataset}:{digest}"


class Progress:
    """A one-line progress report with rate and ETA (redrawn on a terminal, else every few seconds)."""

    def __init__(
        self, total: int, done: int, *, stream: TextIO | None = None, label: str = ""
    ) -> None:
        self.total, self.done, self.failed, self.new = total, done, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, ok: bool) -> None:
        self.done += 1
        self.new += 1
        self.failed += not ok
        now = time.perf_counter()
        if self._tty or now - self._last >= 5.0 or self.done == self.total:
            self._last = now
            self.stream.write(
                ("\r" if self._tty else "") + self.line() + ("" if self._tty else "\n")
            )
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.new / elapsed
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        return (
            f"{self.label} {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%)"
            f"  {rate:.2f} img/s  ETA {eta}  failed {self.failed}"
        )

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


#: Seconds between looks at an image another evaluation of the same run is assessing.
CLAIM_POLL_S = 0.5

#: Seconds between renewals of this evaluation's claims, and how long a claim made on
#: another machine holds without one.
HEARTBEAT_S = 30.0
CLAIM_LEASE_S = 4 * HEARTBEAT_S

#: Where internal errors (bugs) are logged, with their tracebacks.
log = logging.getLogger("tooliqa.eval")


@dataclass
class RunSummary:
    """What one call of :func:`run_dataset` did. ``claimed_elsewhere``: images another
    live evaluation of the same run assessed meanwhile (this one waited for it);
    ``failures``: the run's failed images by kind, (count, first reason), over all its
    resumes; ``unscored``: images of the dataset without a score now."""

    run_id: str
    total: int
    skipped: int
    assessed: int
    failed: int
    wall_s: float
    per_endpoint: dict[str, int] = field(default_factory=dict)
    claimed_elsewhere: int = 0
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    unscored: int = 0

    @property
    def complete(self) -> bool:
        """Every image of the dataset has a score."""
        return self.unscored == 0


@dataclass
class _Endpoint:
    label: str
    context: Context
    in_flight: int = 0
    served: int = 0


async def _assess_one(
    sample: Sample,
    dataset: Dataset,
    endpoint: _Endpoint,
    *,
    deadline: float | None,
    retries: int,
    backoff: float,
) -> tuple[Assessment, str | None, int]:
    """Assess one image, never raising (but for cancellation); returns (assessment,
    failure kind or None, attempts). ``retries``: whole-image retries of a transient
    failure, on top of the chat model's own per-request retries."""
    attempt = 0
    label = backend_name(endpoint.context.get_model())
    while True:
        attempt += 1
        try:
            a = await aassess(
                dataset.path(sample), context=endpoint.context, name=sample.image, deadline=deadline
            )
            return a, (None if a.score is not None else a.error_kind or "model"), attempt
        except Exception as exc:
            failure = classify(exc)
            if failure.kind == "internal":
                log.error("internal error on %s", sample.image, exc_info=exc)
            if failure.transient and attempt <= retries:
                await asyncio.sleep(retry_delay(attempt, backoff, failure.retry_after))
                continue
            a = Assessment.failure(
                failure.reason, image=sample.image, backend=label, kind=failure.kind
            )
            return a, failure.kind, attempt


async def run_dataset(
    store: ResultStore,
    dataset: Dataset,
    contexts: dict[str, Context],
    *,
    method: str,
    run_id: str | None = None,
    settings: dict[str, Any] | None = None,
    concurrency: int = 4,
    limit: int | None = None,
    deadline: float | None = DEFAULT_DEADLINE,
    retries: int = 0,
    backoff: float = 1.0,
    retry_failed: bool = False,
    progress: bool | TextIO = True,
    on_result: Callable[[Sample, Assessment], None] | None = None,
) -> RunSummary:
    """Assess every sample of ``dataset`` not yet in the store for this run.

    ``contexts`` maps an endpoint label (its URL, or ``classic``) to the run
    context for it; images are spread over them, least busy first. ``deadline``:
    seconds per image (all its turns); ``retries``: whole-image retries of a
    transient failure within this call (requests are already retried by the
    chat model); ``retry_failed``: also assess again images that failed for good.
    """
    if not contexts:
        raise ValueError("at least one endpoint is needed")
    first = next(iter(contexts.values()))
    settings = dict(settings or {})
    run_id = run_id or make_run_id(method, dataset.name, settings)
    model = first.get_model()
    store.start_run(
        run_id, method=method, dataset=dataset.name, backend=backend_name(model),
        model=getattr(model, "model_name", None), config=settings, endpoints=list(contexts),
        concurrency=concurrency,
    )  # fmt: skip
    samples = dataset.samples[:limit] if limit else list(dataset.samples)
    listed_at = time.time()
    done = store.done_images(run_id, dataset.name, retry_failed=retry_failed)
    todo = [s for s in samples if s.image not in done]
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    elsewhere = 0
    endpoints = [_Endpoint(label, ctx) for label, ctx in contexts.items()]
    stream = progress if not isinstance(progress, bool) else (sys.stderr if progress else None)
    bar = (
        Progress(len(samples), len(samples) - len(todo), stream=stream, label=dataset.name)
        if stream
        else None
    )
    sem = asyncio.Semaphore(max(1, concurrency))
    failed = 0
    clock = {"last": time.perf_counter()}

    def tick(finished: bool = False) -> None:
        """Add the time since the last tick to the run's wall clock (kept across kills)."""
        now = time.perf_counter()
        store.add_wall_time(run_id, now - clock["last"], finished=finished)
        clock["last"] = now

    async def one(sample: Sample) -> None:
        nonlocal elsewhere
        while True:
            async with sem:
                claim = store.claim(
                    run_id, dataset.name, sample.image, owner, lease=CLAIM_LEASE_S, since=listed_at
                )
                if claim == "claimed":
                    return await assess(sample)
                if claim == "done":
                    elsewhere += 1
                    return
            await asyncio.sleep(CLAIM_POLL_S)  # another evaluation is on it: wait for it

    async def assess(sample: Sample) -> None:
        nonlocal failed
        ep = min(endpoints, key=lambda e: (e.in_flight, e.served))
        ep.in_flight += 1
        t0 = time.perf_counter()
        try:
            a, kind, attempts = await _assess_one(
                sample, dataset, ep, deadline=deadline, retries=retries, backoff=backoff
            )
        finally:
            ep.in_flight -= 1
        ep.served += 1
        store.add_result(
            run_id, dataset.name, sample.image, a, mos=sample.mos,
            mos_norm=dataset.normalized(sample.mos), seconds=time.perf_counter() - t0,
            endpoint=ep.label, error_kind=kind, attempts=attempts, attr_labels=sample.attributes,
        )  # fmt: skip
        store.release(run_id, owner, sample.image)
        tick()
        failed += a.score is None
        if bar:
            bar.update(a.score is not None)
        if on_result:
            on_result(sample, a)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            store.renew(run_id, owner)

    t0 = clock["last"] = time.perf_counter()
    beat = asyncio.ensure_future(heartbeat())
    try:
        await asyncio.gather(*(one(s) for s in todo))
    finally:
        beat.cancel()
        wall = time.perf_counter() - t0
        store.release(run_id, owner)
        tick(finished=len(store.done_images(run_id, dataset.name)) >= len(samples))
        if bar:
            bar.close()
    scored = store.scored_images(run_id, dataset.name)
    return RunSummary(
        run_id=run_id, total=len(samples), skipped=len(samples) - len(todo),
        assessed=len(todo) - elsewhere, failed=failed, wall_s=wall,
        per_endpoint={e.label: e.served for e in endpoints}, claimed_elsewhere=elsewhere,
        failures=store.failures(run_id), unscored=sum(s.image not in scored for s in samples),
    )  # fmt: skip
