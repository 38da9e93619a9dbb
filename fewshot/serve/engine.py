"""The warm engine: one open ``FewShotIndex`` (and its encoder) per index, one worker thread each.

Why one thread per index: every call into the index (classify, add, remove)
runs there, so writes are serialised with each other and with reads inside the
process (the index's own lock serialises writers across processes), and the
encoder is never used from two threads at once.

Concurrent classify requests are gathered into micro-batches: while the worker
runs one batch, new requests queue; the next batch takes all of them (up to
``max_batch`` inputs, waiting ``window_s`` more only when requests are arriving
together), so one encoder call and one prototype lookup serve many requests and
throughput grows with concurrency, while a lone request waits for nothing. A
batch answers exactly what separate calls would: probabilities do not depend on
``top_k`` (a softmax over all classes), so the batch asks for the largest
``top_k`` and each request keeps its first ``top_k`` candidates and its own
threshold. The library re-checks the store on every classify, so a write by
another process is visible in the next answer.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fewshot.serve.errors import Busy


@dataclass
class _Job:
    values: list[Any]
    names: list[str]
    top_k: int
    threshold: float | None
    future: asyncio.Future = field(repr=False)


def _finish(pred: dict, name: str, top_k: int, threshold: float | None) -> dict:
    """One prediction of a batch, as a call with this request's ``top_k`` and ``threshold`` returns it."""
    pred = dict(pred, input=name, candidates=pred["candidates"][:top_k])
    if threshold is not None and pred["score"] < threshold:
        pred["label"], pred["unknown"] = None, True
    return pred


class IndexEngine:
    """One index kept open with its encoder warm; see the module docstring."""

    def __init__(self, name: str, path: str | Path, lock_timeout: float = 10.0, max_batch: int = 64,
                 window_s: float = 0.002, timeout_s: float = 60.0) -> None:
        from fewshot.fewshot_index import FewShotIndex

        self.name = name
        self.index = FewShotIndex.open(path, lock_timeout=lock_timeout)
        self.max_batch = max_batch
        self.window_s = window_s
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"fewshot-{name}")
        self.stats = {"batches": 0, "requests": 0, "inputs": 0}  # micro-batching at work (tests, benchmarks)
        self._queue: asyncio.Queue[_Job] | None = None
        self._batcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def input_kind(self) -> str:
        return self.index.encoder.input_kind

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on this index's worker thread, bounded by the per-request timeout."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except asyncio.TimeoutError:
            raise Busy(f"index {self.name}: no answer within {self.timeout_s:g} s") from None

    async def classify(self, values: list[Any], names: list[str], top_k: int = 5,
                       threshold: float | None = None) -> list[dict]:
        """``classify --json``'s objects for these inputs, answered within a micro-batch."""
        from fewshot.errors import InputError

        if top_k < 1:
            raise InputError("top_k must be >= 1")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the batcher belongs to one event loop (a test may run several)
            self._loop, self._queue = loop, asyncio.Queue()
            self._batcher = loop.create_task(self._batch_loop())
        fut = loop.create_future()
        await self._queue.put(_Job(values, names, top_k, threshold, fut))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except asyncio.TimeoutError:
            raise Busy(f"index {self.name}: no answer within {self.timeout_s:g} s") from None

    async def _gather(self) -> list[_Job]:
        """The next batch: the first queued job, everything queued behind it, more within the window."""
        assert self._queue is not None
        jobs = [await self._queue.get()]
        size = len(jobs[0].values)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if len(jobs) == 1 or remaining <= 0:  # a lone request waits for nobody
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            jobs.append(job)
            size += len(job.values)
        return jobs

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            try:
                answers = await loop.run_in_executor(self._pool, self._run_batch, jobs)
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                answers = [exc] * len(jobs)
            for job, ans in zip(jobs, answers):
                if job.future.done():
                    continue
                if isinstance(ans, BaseException):
                    job.future.set_exception(ans)
                else:
                    job.future.set_result(ans)

    def _run_batch(self, jobs: list[_Job]) -> list[Any]:
        """Worker thread: one library call for the whole batch; a failing batch is retried job by job."""
        try:
            return self._classify_jobs(jobs)
        except Exception as exc:  # noqa: BLE001 - delivered to the request (mapped to its status there)
            if len(jobs) == 1:
                return [exc]
        out: list[Any] = []
        for job in jobs:  # one bad input must not fail its neighbours
            try:
                out += self._classify_jobs([job])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out

    def _classify_jobs(self, jobs: list[_Job]) -> list[list[dict]]:
        values = [v for job in jobs for v in job.values]
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        self.stats["inputs"] += len(values)
        top_k = max(job.top_k for job in jobs)
        preds = [p.to_dict() for p in self.index.classify(values, top_k=top_k)]
        out, start = [], 0
        for job in jobs:
            part = preds[start:start + len(job.values)]
            start += len(job.values)
            out.append([_finish(p, n, job.top_k, job.threshold) for p, n in zip(part, job.names)])
        return out

    async def close(self) -> None:
        """Stop batching, let the worker finish what it runs (no partial write), close the index."""
        if self._batcher is not None and self._loop is asyncio.get_running_loop():
            self._batcher.cancel()
            try:
                await self._batcher
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
        self.index.close()
