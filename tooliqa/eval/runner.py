"""The evaluation runner: assess a dataset concurrently over one or more model
endpoints, writing every Assessment to the store as soon as it is done.

* Requests are spread over replicas: each image goes to the endpoint with the
  fewest images in flight, so N servers (or a data-parallel deployment behind
  N URLs) give up to N times the throughput.
* Transient failures (server unreachable, HTTP errors, timeouts) are retried
  with exponential backoff; an image that still fails is stored as a
  ``backend`` error, which the next run of the same command retries.
* Re-running the same command resumes: finished images are skipped.
* Each image's attribute labels (``Sample.attributes``) are stored with its
  result, so the report can compare them with the predicted attribute scores
  (a context with ``attribute_scores=True``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tooliqa.api import aassess
from tooliqa.backends.openai_compat import BackendError
from tooliqa.graph import Assessment, Context
from tooliqa.graph.nodes import backend_name
from tooliqa.tools import ImageError

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


@dataclass
class RunSummary:
    run_id: str
    total: int
    skipped: int
    assessed: int
    failed: int
    wall_s: float
    per_endpoint: dict[str, int] = field(default_factory=dict)


@dataclass
class _Endpoint:
    label: str
    context: Context
    in_flight: int = 0
    served: int = 0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, BackendError | asyncio.TimeoutError | TimeoutError | ConnectionError)


async def _assess_with_retries(
    sample: Sample,
    dataset: Dataset,
    endpoint: _Endpoint,
    *,
    timeout: float,
    retries: int,
    backoff: float,
) -> tuple[Assessment, str | None, int]:
    """Assess one image; returns (assessment, error kind, attempts)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            a = await asyncio.wait_for(
                aassess(dataset.path(sample), context=endpoint.context, name=sample.image), timeout
            )
            return a, (None if a.score is not None else "model"), attempt
        except ImageError as exc:
            return Assessment.failure(str(exc), image=sample.image), "image", attempt
        except Exception as exc:
            if not _transient(exc):
                raise
            if attempt > retries:
                msg = (
                    f"{type(exc).__name__}: {exc}" if str(exc) else f"timed out after {timeout:g} s"
                )
                return Assessment.failure(msg, image=sample.image), "backend", attempt
            await asyncio.sleep(backoff * 2 ** (attempt - 1))


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
    timeout: float = 600.0,
    retries: int = 2,
    backoff: float = 1.0,
    progress: bool | TextIO = True,
    on_result: Callable[[Sample, Assessment], None] | None = None,
) -> RunSummary:
    """Assess every sample of ``dataset`` not yet in the store for this run.

    ``contexts`` maps an endpoint label (its URL, or ``classic``) to the run
    context for it; images are spread over them, least busy first.
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
    done = store.done_images(run_id, dataset.name)
    todo = [s for s in samples if s.image not in done]
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
        nonlocal failed
        async with sem:
            ep = min(endpoints, key=lambda e: (e.in_flight, e.served))
            ep.in_flight += 1
            t0 = time.perf_counter()
            try:
                a, kind, attempts = await _assess_with_retries(
                    sample, dataset, ep, timeout=timeout, retries=retries, backoff=backoff
                )
            finally:
                ep.in_flight -= 1
            ep.served += 1
            store.add_result(
                run_id, dataset.name, sample.image, a, mos=sample.mos,
                mos_norm=dataset.normalized(sample.mos), seconds=time.perf_counter() - t0,
                endpoint=ep.label, error_kind=kind, attempts=attempts, attr_labels=sample.attributes,
            )  # fmt: skip
            tick()
            failed += a.score is None
            if bar:
                bar.update(a.score is not None)
            if on_result:
                on_result(sample, a)

    t0 = clock["last"] = time.perf_counter()
    try:
        await asyncio.gather(*(one(s) for s in todo))
    finally:
        wall = time.perf_counter() - t0
        tick(finished=len(store.done_images(run_id, dataset.name)) >= len(samples))
        if bar:
            bar.close()
    return RunSummary(
        run_id=run_id, total=len(samples), skipped=len(samples) - len(todo), assessed=len(todo),
        failed=failed, wall_s=wall, per_endpoint={e.label: e.served for e in endpoints},
    )  # fmt: skip
