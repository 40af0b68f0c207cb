"""The micro-batcher of ``sst2 serve``: texts of concurrent requests gathered into model batches.

Handlers put their texts on an asyncio queue; a gatherer takes whatever is pending (up to ``max_batch``
texts, waiting at most ``max_wait_ms`` for more), runs the model once in a worker thread so the event loop
keeps accepting requests (``workers`` such batches at once), and hands each request its slice of the
results. If a batch fails, its requests are retried one by one, so only a faulty request fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("sst2.serve")


class MicroBatcher:
    """Gathers texts from concurrent requests into model batches, ``limits.workers`` model calls at a time.

    With one worker (the default) model calls never overlap, and each can use all intra-op threads.
    With two, the next batch is gathered and run while the previous one still runs, each call on
    its own thread (give each fewer intra-op threads): the cores stay busy while a batch's answers go
    out and the next batch comes in, and small batches run side by side.
    ``limits``: the server's ``sst2.serving.app.Limits`` (this reads ``max_batch``, ``max_wait_ms`` and
    ``workers``). ``metrics`` (optional) gets ``model_call(texts, seconds)`` after each model call and
    ``model_error()`` after each one that raised."""

    def __init__(self, classifier, limits, metrics=None):
        self.classifier = classifier
        self.limits = limits
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="sst2-model")
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()  # batches in the model now
        self.batches = 0
        self.texts = 0
        # time inside model calls, summed over workers; near uptime x workers = the model is the bottleneck
        self.model_seconds = 0.0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*self.running, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def predict(self, texts: list[str]) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _gather(self) -> list[tuple[list[str], asyncio.Future]]:
        """Block for one request, then take more until ``max_batch`` texts or ``max_wait_ms`` passes.

        A request is never split, so a batch may exceed ``max_batch`` by less than one request.
        """
        items = [await self.queue.get()]
        n = len(items[0][0])
        deadline = time.perf_counter() + self.limits.max_wait_ms / 1000
        while n < self.limits.max_batch:
            if not self.queue.empty():
                item = self.queue.get_nowait()
            else:
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                # Not asyncio.wait_for: on Python 3.11 it can drop an item that arrives as it times out.
                get = asyncio.ensure_future(self.queue.get())
                await asyncio.wait({get}, timeout=timeout)
                if not get.done():
                    get.cancel()  # an unfinished get() leaves the queue untouched
                    break
                item = get.result()
            items.append(item)
            n += len(item[0])
        return items

    async def _call(self, texts: list[str]) -> list:
        """One model call in the model thread, counted; raises what the model raised."""
        t0 = time.perf_counter()
        try:
            preds = await asyncio.get_running_loop().run_in_executor(self.executor, self.classifier.predict_details,
                                                                     texts)
            check_predictions(preds, len(texts))
        except Exception:
            if self.metrics is not None:
                self.metrics.model_error()
            raise
        seconds = time.perf_counter() - t0
        self.model_seconds += seconds
        self.batches += 1
        self.texts += len(texts)
        if self.metrics is not None:
            self.metrics.model_call(len(texts), seconds)
        return preds

    async def _serve(self, items: list[tuple[list[str], asyncio.Future]]) -> None:
        """Run one batch; if it fails, retry its requests one by one so that only a faulty one fails."""
        try:
            preds = await self._call([t for req, _ in items for t in req])
        except Exception as exc:  # a model failure fails requests, not the server
            if len(items) == 1:
                log.error("a request of %d texts failed in the model", len(items[0][0]), exc_info=exc)
                _settle(items[0][1], exc=exc)
                return
            log.warning("a batch of %d requests failed in the model (%s: %s); retrying them one by one",
                        len(items), type(exc).__name__, exc)
            for req, fut in items:
                if fut.done():  # the client has gone away
                    continue
                try:
                    _settle(fut, await self._call(req))
                except Exception as exc:
                    log.error("a request of %d texts failed in the model", len(req), exc_info=exc)
                    _settle(fut, exc=exc)
            return
        start = 0
        for req, fut in items:
            _settle(fut, preds[start : start + len(req)])
            start += len(req)

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.limits.workers)
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()  # a worker is free: gather the next batch for it
            try:
                items = await self._gather()
            except BaseException:
                slots.release()
                raise
            parts = 1
            while parts < min(self.limits.workers, len(items)) and not slots.locked():
                await slots.acquire()  # returns at once: another worker is free too, so share the batch
                parts += 1
            groups = _split(items, parts)
            for _ in range(parts - len(groups)):
                slots.release()  # fewer groups than free workers (one request held most texts)
            for part in groups:
                task = loop.create_task(self._serve(part))
                self.running.add(task)
                task.add_done_callback(lambda t: (self.running.discard(t), slots.release()))


def check_predictions(preds: list, n: int) -> None:
    """Raise ``RuntimeError`` unless ``preds`` are ``n`` predictions with finite probabilities: a NaN cannot
    be written as JSON (the answer would be a plain-text 500, not counted as a model error)."""
    if len(preds) != n:
        raise RuntimeError(f"the model returned {len(preds)} predictions for {n} texts")
    bad = next((p for pred in preds for p in pred.probabilities.values() if not math.isfinite(p)), None)
    if bad is not None:
        raise RuntimeError(f"the model gave a probability of {bad} (its weights are not finite numbers)")


def _split(items: list, parts: int) -> list[list]:
    """``items`` (requests) in ``parts`` groups of about as many texts each, shortest texts first, so that
    each group pads little. Requests stay whole."""
    if parts == 1:
        return [items]
    items = sorted(items, key=lambda item: max(map(len, item[0])))
    total = sum(len(req) for req, _ in items)
    groups, group, n = [], [], 0
    for item in items:
        group.append(item)
        n += len(item[0])
        if len(groups) < parts - 1 and n >= total * (len(groups) + 1) / parts:
            groups.append(group)
            group = []
    return groups + [group] if group else groups


def _settle(fut: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if fut.done():  # the client may have gone away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
