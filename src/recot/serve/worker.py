"""The worker: one thread owns the model and runs every encode and answer.

Jobs come from the HTTP handlers (the event loop) and go back through
``concurrent.futures.Future`` objects. Two queues:

* answers: a question about a video whose encoding is ready (prefill + generation);
* encodes: a video to decode and encode, a compressor chunk at a time.

Jobs start in the order they arrived. Once an encode runs, the worker answers
the questions waiting at the end of every compressor chunk before encoding
the next, so a question about an encoded video waits for at most one chunk
(and the questions ahead of it), never for a whole hour-long video; and since
only the questions already waiting are answered in each gap, a steady stream
of questions cannot starve the encode either. Queues are bounded by the
caller (:class:`recot.serve.runtime.Runtime` refuses work beyond the limits with 429).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from recot.engine import Answer, GenerationOptions, VideoChat, VideoEncoding
from recot.serve.encoding import encode_interleaved
from recot.serve.generation import answer_streaming
from recot.serve.metrics import Metrics
from recot.serve.schemas import SelectionMap
from recot.video import SamplePlan, VideoDecodeError

log = logging.getLogger("recot.serve")


class JobCancelled(Exception):
    """The job was cancelled (client gone, video deleted) before or while it ran."""


class JobTimeout(TimeoutError):
    """The job's deadline passed before it could start."""


class WorkerStopped(RuntimeError):
    """The server is shutting down; the job did not run."""


@dataclass
class AnswerJob:
    """One question about an encoded video.

    ``on_selection`` and ``on_text`` are called from the worker thread (they
    must be thread-safe); ``deadline`` is a ``time.monotonic()`` instant.
    """

    encoding: VideoEncoding
    question: str
    options: GenerationOptions
    deadline: float
    on_selection: Callable[[SelectionMap], None] = lambda selection: None
    on_text: Callable[[str], None] = lambda text: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    seq: int = -1  # arrival order, set when submitted


@dataclass
class AnswerResult:
    answer: Answer
    timed_out: bool
    cancelled: bool
    selection: SelectionMap | None


@dataclass
class EncodeJob:
    """One video to encode under ``plan`` (cache key ``key``); ``progress`` is groups done / total."""

    path: str
    plan: SamplePlan
    key: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    started: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    seq: int = -1  # arrival order, set when submitted


class Worker:
    """The model's only user: a daemon thread running answer and encode jobs."""

    def __init__(self, chat: VideoChat, metrics: Metrics) -> None:
        self.chat = chat
        self.metrics = metrics
        self._cond = threading.Condition()
        self._answers: deque[AnswerJob] = deque()
        self._encodes: deque[EncodeJob] = deque()
        self._busy_answering = 0
        self._current_encode: EncodeJob | None = None
        self._stopping = False
        self._arrivals = itertools.count()
        self._thread = threading.Thread(target=self._run, name="recot-worker", daemon=True)
        self.answer_seconds_ewma = 1.0  # recent seconds per answer, for Retry-After

    # ----- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, stop the running ones at their next check, fail the queued ones, join the thread."""
        with self._cond:
            self._stopping = True
            pending: list[AnswerJob | EncodeJob] = [*self._answers, *self._encodes]
            self._answers.clear()
            self._encodes.clear()
            if self._current_encode is not None:
                self._current_encode.cancelled.set()
            self._cond.notify_all()
        for job in pending:
            _fail(job.future, WorkerStopped("the server is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ----- submitting ----------------------------------------------------------------
    def submit_answer(self, job: AnswerJob) -> None:
        self._submit(job, self._answers)

    def submit_encode(self, job: EncodeJob) -> None:
        self._submit(job, self._encodes)

    def _submit(self, job: AnswerJob | EncodeJob, queue: deque) -> None:
        with self._cond:
            if self._stopping:
                raise WorkerStopped("the server is shutting down")
            job.seq = next(self._arrivals)
            queue.append(job)
            self._update_depth()
            self._cond.notify_all()

    def depth(self) -> dict[str, int]:
        """Jobs waiting or running, by kind."""
        with self._cond:
            return {
                "answer": len(self._answers) + self._busy_answering,
                "encode": len(self._encodes) + (self._current_encode is not None),
            }

    def _update_depth(self) -> None:
        self.metrics.queue_depth.labels("answer").set(len(self._answers) + self._busy_answering)
        self.metrics.queue_depth.labels("encode").set(len(self._encodes) + (self._current_encode is not None))

    # ----- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._answers or self._encodes or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                # Jobs start in arrival order; once an encode runs, questions go between its chunks.
                answer_first = self._answers and (not self._encodes or self._answers[0].seq < self._encodes[0].seq)
                job: AnswerJob | EncodeJob = self._answers.popleft() if answer_first else self._encodes.popleft()
                if isinstance(job, AnswerJob):
                    self._busy_answering += 1
                else:
                    self._current_encode = job
                self._update_depth()
            try:
                if isinstance(job, AnswerJob):
                    self._answer(job)
                else:
                    self._encode(job)
            finally:
                with self._cond:
                    if isinstance(job, AnswerJob):
                        self._busy_answering -= 1
                    else:
                        self._current_encode = None
                    self._update_depth()

    def _answer_waiting(self) -> float:
        """Answer the questions waiting now (between two encode chunks); returns the seconds it took.

        Only those already waiting: questions that arrive meanwhile wait for the
        next gap, so a steady stream of questions cannot starve the encode.
        """
        started = time.perf_counter()
        with self._cond:
            waiting = len(self._answers)
        for _ in range(waiting):
            with self._cond:
                if not self._answers or self._stopping:
                    break
                job = self._answers.popleft()
                self._busy_answering += 1
                self._update_depth()
            try:
                self._answer(job)
            finally:
                with self._cond:
                    self._busy_answering -= 1
                    self._update_depth()
        return time.perf_counter() - started

    def _answer(self, job: AnswerJob) -> None:
        if job.cancelled.is_set():
            self.metrics.answers.labels("cancelled").inc()
            _fail(job.future, JobCancelled("the client went away"))
            return
        if time.monotonic() > job.deadline:
            self.metrics.answers.labels("timeout").inc()
            _fail(job.future, JobTimeout("the request's time ran out while it waited"))
            return
        started = time.perf_counter()
        selection: list[SelectionMap] = []

        def on_selection(found: SelectionMap) -> None:
            selection.append(found)
            job.on_selection(found)

        def should_stop() -> bool:
            return job.cancelled.is_set() or time.monotonic() > job.deadline or self._stopping

        try:
            answer, stopped = answer_streaming(
                self.chat, job.encoding, job.question, job.options, job.on_text, on_selection, should_stop
            )
        except Exception as exc:  # reported to the request; the worker carries on
            self.metrics.answers.labels("failed").inc()
            if not isinstance(exc, ValueError):
                log.exception("answering failed")
            _fail(job.future, exc)
            return
        seconds = time.perf_counter() - started
        self.answer_seconds_ewma = 0.8 * self.answer_seconds_ewma + 0.2 * seconds
        cancelled = stopped and job.cancelled.is_set()
        timed_out = stopped and not cancelled
        self.metrics.answers.labels("cancelled" if cancelled else "timeout" if timed_out else "completed").inc()
        self.metrics.answer_seconds.observe(seconds)
        self.metrics.generated_tokens.inc(answer.new_tokens)
        if not job.future.done():
            job.future.set_result(AnswerResult(answer, timed_out, cancelled, selection[-1] if selection else None))

    def _encode(self, job: EncodeJob) -> None:
        if job.cancelled.is_set():
            _fail(job.future, JobCancelled("the encode was cancelled"))
            return
        job.started.set()
        started = time.perf_counter()
        answering = 0.0

        def between_chunks(done: int, total: int) -> None:
            nonlocal answering
            job.progress = done / total
            answering += self._answer_waiting()
            if job.cancelled.is_set():
                raise JobCancelled("the encode was cancelled")

        try:
            encoding = encode_interleaved(self.chat, job.path, job.plan, job.key, between_chunks)
        except Exception as exc:
            if not isinstance(exc, (JobCancelled, VideoDecodeError, ValueError, OSError)):
                log.exception("encoding %s failed", job.path)
            _fail(job.future, exc)
            return
        job.progress = 1.0
        if not encoding.cache_hit:
            seconds = time.perf_counter() - started - answering
            self.metrics.cache_misses.inc()
            self.metrics.encode_frames.inc(encoding.num_frames)
            self.metrics.encode_seconds.inc(seconds)
            self.metrics.encode_fps.set(encoding.num_frames / max(seconds, 1e-9))
        else:
            self.metrics.cache_hits.labels("disk").inc()
        job.future.set_result(encoding)


def _fail(future: Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
