"""The warm engine: one open ``FewShotIndex`` (and its encoder) per index, one worker thread each.

Why one thread per index: every call into the index (classify, add, remove)
runs there, so writes are serialised with each other and with reads inside the
process (the index's own lock serialises writers across processes), and the
encoder is never used from two threads at once.

Concurrent classify requests are gathered into micro-batches: while the worker
runs one batch, new requests queue; the next batch takes all of them (up to
``max_batch`` requests, waiting ``window_s`` more only when requests are arriving
together); the worker decodes them and makes one library call (one snapshot, one
encoder forward) for all, so per-call costs are paid once per batch, while a lone
request waits for nothing. A
batch answers exactly what separate calls would: probabilities do not depend on
``top_k`` (a softmax over all classes), so the batch asks for the largest
``top_k`` and each request keeps its first ``top_k`` candidates and its own
threshold. The library re-checks the store on every classify, so a write by
another process is visible in the next answer.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from fewshot.serve.errors import Busy


Threshold = Union[float, str, None]  # a score, "auto" (the library picks it), or none


@dataclass
class _Job:
    decode: Callable[[], list[Any]]  # -> the request's Decoded inputs; runs on the worker thread
    n: int  # how many inputs the request holds (known before decoding)
    top_k: int
    threshold: Threshold
    future: asyncio.Future = field(repr=False)


def _finish(pred: dict, name: str, top_k: int, threshold: Threshold) -> dict:
    """One prediction of a batch, as a call with this request's ``top_k`` and ``threshold`` returns it.

    A numeric threshold is applied here (the batch was classified without one: scores and
    probabilities do not depend on it); a named one ("auto") was passed to the library.
    """
    pred = dict(pred, input=name, candidates=pred["candidates"][:top_k])
    if isinstance(threshold, (int, float)) and pred["score"] < threshold:
        pred["label"] = None
    if "unknown" in pred:
        pred["unknown"] = pred["label"] is None
    return pred


# Inputs per micro-batch (one library call, one encoder forward). Measured with the shipped CNN (9 shifted
# views per image), one torch thread, best of 20 on the shared 2-core machine: a classify costs 6.7 ms per
# image alone, 4.7 in a batch of 4, 3.6 in a batch of 8, then 4.3 at 16 and 7.0 at 32 (activations leave
# the cache), so batches grow to 8 and no further.
BATCH_INPUTS = 8


def _set_threads(n: int) -> None:
    """Worker-thread initializer: torch's intra-op thread count is per OS thread (OpenMP), so set it there."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


class IndexEngine:
    """One index kept open with its encoder warm; see the module docstring."""

    def __init__(self, name: str, path: str | Path, lock_timeout: float = 10.0, max_batch: int = 64,
                 window_s: float = 0.002, timeout_s: float = 60.0, threads: int = 0,
                 batch_inputs: int = BATCH_INPUTS) -> None:
        from fewshot.fewshot_index import FewShotIndex

        self.name = name
        self.index = FewShotIndex.open(path, lock_timeout=lock_timeout)
        self.max_batch = max_batch
        self.batch_inputs = batch_inputs
        self.window_s = window_s
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"fewshot-{name}",
                                                           initializer=_set_threads, initargs=(threads,))
        # micro-batching at work (tests, benchmarks): gathered batches, library calls, requests, inputs
        self.stats = {"batches": 0, "calls": 0, "requests": 0, "inputs": 0}
        self._pending: collections.deque[_Job] = collections.deque()  # classify requests waiting for a batch
        self._wake = asyncio.Event()  # set when one is added
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

    async def classify(self, decode: Callable[[], list[Any]], n: int, top_k: int = 5,
                       threshold: Threshold = None) -> list[dict]:
        """``classify --json``'s objects for the ``n`` inputs ``decode()`` gives, answered within a micro-batch.

        ``decode`` runs on the worker thread, inside the batch: the event loop only parses
        requests, and a bad input fails its own request alone.
        """
        from fewshot.errors import InputError

        if top_k < 1:
            raise InputError("top_k must be >= 1")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the batcher belongs to one event loop (a test may run several)
            self._loop, self._pending, self._wake = loop, collections.deque(), asyncio.Event()
            self._batcher = loop.create_task(self._batch_loop())
        fut = loop.create_future()
        self._pending.append(_Job(decode, n, top_k, threshold, fut))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except asyncio.TimeoutError:
            raise Busy(f"index {self.name}: no answer within {self.timeout_s:g} s") from None

    async def _gather(self) -> list[_Job]:
        """The next batch: the first waiting job, what waits behind it, more within the window,
        up to ``batch_inputs`` inputs (a request larger than that is a batch of its own)."""
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        jobs = [self._pending.popleft()]
        size = jobs[0].n
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while size < self.batch_inputs:
            if not self._pending:
                remaining = deadline - loop.time()
                if len(jobs) == 1 or remaining <= 0:  # a lone request waits for nobody
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            if size + self._pending[0].n > self.batch_inputs:  # it starts the next batch
                break
            jobs.append(self._pending.popleft())
            size += jobs[-1].n
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
        """Worker thread: decode each request, then one library call per threshold kind.

        Numeric thresholds (and none) share one call; a named threshold ("auto") is the
        library's to apply, so such requests get a call of their own kind. A failing call
        is retried request by request, so one bad input does not fail its neighbours.
        """
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        out: list[Any] = [None] * len(jobs)
        decoded: dict[int, list[Any]] = {}
        for i, job in enumerate(jobs):
            try:
                decoded[i] = job.decode()
            except Exception as exc:  # noqa: BLE001 - this request's own error
                out[i] = exc
        groups: dict[Any, list[int]] = {}
        for i in decoded:
            thr = jobs[i].threshold
            groups.setdefault(thr if isinstance(thr, str) else None, []).append(i)
        for thr, members in groups.items():
            try:
                answers = self._classify(jobs, decoded, members, thr)
            except Exception as exc:  # noqa: BLE001 - delivered to the request (mapped to its status there)
                if len(members) == 1:
                    answers = [exc]
                else:
                    answers = []
                    for i in members:
                        try:
                            answers += self._classify(jobs, decoded, [i], thr)
                        except Exception as one:  # noqa: BLE001
                            answers.append(one)
            for i, ans in zip(members, answers):
                out[i] = ans
        return out

    def _classify(self, jobs: list[_Job], decoded: dict[int, list[Any]], members: list[int],
                  threshold: str | None) -> list[list[dict]]:
        values = [d.value for i in members for d in decoded[i]]
        self.stats["calls"] += 1
        self.stats["inputs"] += len(values)
        top_k = max(jobs[i].top_k for i in members)
        try:
            preds = [p.to_dict() for p in self.index.classify(values, top_k=top_k, threshold=threshold)]
        except TypeError:  # a library without named thresholds compares the score with the string
            if threshold is None:
                raise
            from fewshot.errors import InputError

            raise InputError(f"threshold {threshold!r} is not supported by this fewshot library; "
                             "give a number") from None
        out, start = [], 0
        for i in members:
            part, start = preds[start:start + len(decoded[i])], start + len(decoded[i])
            out.append([_finish(p, d.name, jobs[i].top_k, jobs[i].threshold) for p, d in zip(part, decoded[i])])
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
