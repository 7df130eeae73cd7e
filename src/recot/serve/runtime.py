"""The server's state between HTTP handlers and the worker: admission, encodings, uploads.

* Admission: at most ``--max-queue`` chat requests at once and ``--max-encode-queue``
  videos waiting for or being encoded; beyond that :class:`recot.serve.errors.APIError`
  429 with a ``Retry-After`` estimated from recent answer times.
* Encodings: a video's encoding is looked up in memory (an LRU bounded in bytes),
  then in the disk cache (:class:`recot.engine.EncodingCache`), and only then
  encoded by the worker; requests for a video already being encoded wait for
  that one encode.
* Uploads: validated (probed) while the client waits, then thumbnailed and
  encoded in the background with progress readable at ``GET /v1/videos/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from recot.engine import FrameSampling, VideoChat, VideoEncoding
from recot.serve.errors import APIError
from recot.serve.media import MediaResolver, MediaSource
from recot.serve.metrics import Metrics
from recot.serve.schemas import SamplingRequest, VideoError, VideoObject
from recot.serve.settings import ServeSettings
from recot.serve.uploads import VideoStore, make_thumbnails
from recot.serve.worker import EncodeJob, JobCancelled, Worker, WorkerStopped
from recot.video import SamplePlan, VideoDecodeError, VideoNotFoundError

log = logging.getLogger("recot.serve")


class EncodingMemory:
    """Encoded videos kept in memory, least recently used dropped first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, VideoEncoding] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def size_of(encoding: VideoEncoding) -> int:
        tokens = encoding.encoded.tokens
        return tokens.numel() * tokens.element_size()

    def get(self, key: str) -> VideoEncoding | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, encoding: VideoEncoding) -> None:
        with self._lock:
            self._items[key] = encoding
            self._items.move_to_end(key)
            total = sum(self.size_of(e) for e in self._items.values())
            while self._items and total > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                total -= self.size_of(dropped)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


class Slots:
    """A thread-safe count of admitted work with a limit; :meth:`take` returns the function that gives a slot back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()

    def take(self, force: bool = False) -> Callable[[], None] | None:
        """A slot's release function, or None when all are taken (``force``: take one regardless)."""
        with self._lock:
            if self.taken >= self.limit and not force:
                return None
            self.taken += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.taken -= 1

        return release


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    """Run ``callback`` on the event loop from another thread (dropped once the loop has closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def video_error(label: str, exc: VideoDecodeError) -> APIError:
    """A decode failure as a client error naming the client's reference, never a server path."""
    status = 404 if isinstance(exc, VideoNotFoundError) else 400
    return APIError(status, f"{label}: {exc.cause}", code="invalid_video")


class Runtime:
    """Everything the handlers share: the worker, uploads, media resolution, encodings and admission."""

    def __init__(self, chat: VideoChat, settings: ServeSettings, metrics: Metrics) -> None:
        if chat.cache is None:
            raise ValueError("the server needs a VideoChat with an EncodingCache (its encodings are shared)")
        self.chat = chat
        self.settings = settings
        self.metrics = metrics
        self.worker = Worker(chat, metrics)
        self.store = VideoStore(settings.upload_dir)
        self.media = MediaResolver(settings, self.store)
        self.memory = EncodingMemory(settings.memory_cache_bytes)
        self.started_at = time.time()
        self.stopping = False
        self._encodes: dict[str, EncodeJob] = {}  # cache key -> the job encoding it
        self._upload_jobs: dict[str, EncodeJob] = {}  # upload id -> its encode job
        self._tasks: set[asyncio.Task] = set()
        self._chats = Slots(settings.max_queue)  # chat requests admitted (waiting or running)
        self._encode_slots = Slots(settings.max_encode_queue)  # uploads and new encodes not finished yet

    # ----- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.worker.start()
        for record in self.store.all():  # uploads whose encode a restart cut off
            if record.status == "queued":
                self.spawn(self.encode_upload(record, None, self._encode_slots.take(force=True)))

    async def stop(self) -> None:
        self.stopping = True
        self.worker.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coroutine) -> asyncio.Task:
        """Run ``coroutine`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----- admission -------------------------------------------------------------------
    def admit_chat(self) -> Callable[[], None]:
        """Take a chat slot or raise 429; returns the function that gives it back (safe to call twice)."""
        release = self._chats.take()
        if release is None:
            self.metrics.rejected.labels("answer").inc()
            raise self._busy("answer", self._chats, "--max-queue")
        return release

    def reserve_encode(self) -> Callable[[], None]:
        """Take an encode slot (an upload, or an encode a chat request needs) or raise 429."""
        release = self._encode_slots.take()
        if release is None:
            self.metrics.rejected.labels("encode").inc()
            raise self._busy("encode", self._encode_slots, "--max-encode-queue")
        return release

    def _busy(self, kind: str, slots: Slots, flag: str) -> APIError:
        """429 with a ``Retry-After`` estimated from recent answer times (encodes: a fixed 10 s)."""
        seconds = self.worker.answer_seconds_ewma * (slots.taken + 1) if kind == "answer" else 10.0
        retry = max(1, min(3600, math.ceil(seconds)))
        return APIError(
            429,
            f"the server is busy: {slots.taken} {kind} requests are in already ({flag} {slots.limit}); "
            f"retry in {retry} s",
            code="queue_full",
            headers={"Retry-After": str(retry)},
        )

    # ----- sampling --------------------------------------------------------------------
    def sampling(self, asked: SamplingRequest) -> FrameSampling:
        """The frames to encode for a request, within ``--max-frames``; 400 naming the parameter otherwise."""
        limit = self.settings.max_frames
        if asked.frames is not None and asked.fps is not None:
            raise APIError(400, "give frames or fps, not both", param="frames", code="invalid_parameter")
        for name in ("frames", "max_frames"):
            value = getattr(asked, name)
            if value is not None and value > limit:
                raise APIError(
                    400,
                    f"{name} {value} is more than the server allows (--max-frames {limit})",
                    param=name,
                    code="invalid_parameter",
                )
        if asked.start is not None and asked.end is not None and asked.end <= asked.start:
            raise APIError(
                400, f"end {asked.end:g} is not after start {asked.start:g}", param="end", code="invalid_parameter"
            )
        fps = asked.fps if asked.frames is not None or asked.fps is not None else self.settings.default_fps
        return FrameSampling(asked.frames, fps, min(asked.max_frames or limit, limit), asked.start, asked.end)

    async def plan(self, source: MediaSource, sampling: FrameSampling) -> SamplePlan:
        """Probe and sample a video off the event loop; decode failures become client errors."""
        try:
            return await asyncio.to_thread(self.chat.plan, str(source.path), sampling)
        except VideoDecodeError as exc:
            raise video_error(source.label, exc) from exc

    # ----- encodings -------------------------------------------------------------------
    async def encoding_for(
        self,
        source: MediaSource,
        sampling: FrameSampling,
        plan: SamplePlan | None = None,
        on_job: Callable[[EncodeJob], None] | None = None,
        reserved: bool = False,
    ) -> VideoEncoding:
        """The encoding of a video: from memory, the disk cache, a running encode, or a new one.

        A new encode takes an encode slot (429 when none is free) unless the caller
        ``reserved`` one already (an accepted upload).
        """
        path = str(source.path)
        plan = plan or await self.plan(source, sampling)
        key = await asyncio.to_thread(self.chat.cache.key, path, plan.indices, self.chat.model_id)
        if source.upload_id is not None and source.upload_id not in self.store.cache_keys:
            self.store.cache_keys[source.upload_id] = key  # saved with the record's next update
        found = self.memory.get(key)
        if found is not None:
            self.metrics.cache_hits.labels("memory").inc()
            return dataclasses.replace(found, cache_hit=True, encode_seconds=0.0)
        job = self._encodes.get(key)
        if job is None:
            loaded = await asyncio.to_thread(self._load_cached, path, key)
            if loaded is not None:
                self.metrics.cache_hits.labels("disk").inc()
                self.memory.put(key, loaded)
                return loaded
            release = (lambda: None) if reserved else self.reserve_encode()
            job = EncodeJob(path, plan, key)
            job.future.add_done_callback(lambda _: release())
            try:
                self.worker.submit_encode(job)
            except WorkerStopped as exc:
                release()
                raise APIError(503, str(exc), code="shutting_down") from exc
            self._encodes[key] = job
            loop = asyncio.get_running_loop()
            job.future.add_done_callback(lambda _: _call_soon(loop, self._forget_encode, key, job))
        if on_job is not None:
            on_job(job)
        try:
            encoding = await asyncio.wrap_future(job.future)
        except VideoDecodeError as exc:
            raise video_error(source.label, exc) from exc
        except WorkerStopped as exc:
            raise APIError(503, str(exc), code="shutting_down") from exc
        except JobCancelled as exc:
            raise APIError(409, f"{source.label} was deleted while it was being encoded", code="video_deleted") from exc
        except ValueError as exc:
            raise APIError(400, f"{source.label}: {exc}", code="invalid_video") from exc
        self.memory.put(key, encoding)
        return encoding

    def _forget_encode(self, key: str, job: EncodeJob) -> None:
        if self._encodes.get(key) is job:
            del self._encodes[key]

    def _load_cached(self, path: str, key: str) -> VideoEncoding | None:
        started = time.perf_counter()
        found = self.chat.cache.load(key)
        if found is None:
            return None
        encoded, metadata = found
        indices = json.loads(metadata["frame_indices"]) if "frame_indices" in metadata else None
        return VideoEncoding(path, encoded, int(metadata["frames"]), indices, True, time.perf_counter() - started, key)

    # ----- uploads -----------------------------------------------------------------------
    def upload_view(self, record: VideoObject) -> VideoObject:
        """The record with live progress while its encode runs."""
        job = self._upload_jobs.get(record.id)
        if job is None or record.status not in ("queued", "encoding"):
            return record
        status = "encoding" if job.started.is_set() else "queued"
        return record.model_copy(update={"status": status, "progress": round(job.progress, 4)})

    async def accept_upload(
        self, record: VideoObject, path: Path, sampling_asked: SamplingRequest, release: Callable[[], None]
    ) -> VideoObject:
        """Check an uploaded file is a readable video, register it and start encoding it in the background.

        ``release`` gives back the upload's encode slot once its encode is over.
        """
        source = MediaSource(path, f"the uploaded file {record.filename!r}")
        try:
            sampling = self.sampling(sampling_asked)
            plan = await self.plan(source, sampling)
        except BaseException:
            path.unlink(missing_ok=True)
            release()
            raise
        info = plan.info
        record = record.model_copy(
            update={"duration": round(info.duration, 3), "width": info.width, "height": info.height,
                    "sampling": sampling_asked, "sampling_rule": plan.rule, "frames": len(plan)}
        )  # fmt: skip
        self.store.add(record, path)
        self.spawn(self.encode_upload(record, plan, release))
        return record

    async def encode_upload(self, record: VideoObject, plan: SamplePlan | None, release: Callable[[], None]) -> None:
        """Thumbnails, then the encoding of an upload; the record says how it went."""
        video_id = record.id
        path = self.store.path_of(video_id)
        source = MediaSource(path, f"video {video_id}", upload_id=video_id)
        started = time.perf_counter()
        try:
            if self.settings.thumbnails:
                url = f"/v1/videos/{video_id}/thumbnails"
                thumbs = await asyncio.to_thread(
                    make_thumbnails, path, self.store.thumbs_path(video_id), self.settings.thumbnails, url
                )
                record = self._update(video_id, thumbnails=thumbs)
                if record is None:  # deleted meanwhile
                    return
            sampling = self.sampling(record.sampling)

            def remember(job: EncodeJob) -> None:
                self._upload_jobs[video_id] = job

            encoding = await self.encoding_for(source, sampling, plan, on_job=remember, reserved=True)
            self._update(
                video_id, status="ready", progress=1.0, frames=encoding.num_frames, groups=encoding.encoded.num_groups,
                encode_seconds=round(time.perf_counter() - started, 3),
            )  # fmt: skip
        except APIError as exc:
            if exc.status != 409:  # 409: deleted meanwhile, nothing to record
                self._update(video_id, status="failed", error=VideoError(message=exc.message, code=exc.code))
        except (VideoDecodeError, OSError, ValueError) as exc:
            self._update(
                video_id, status="failed", error=VideoError(message=f"video {video_id}: {exc}", code="invalid_video")
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("encoding upload %s failed", video_id)
            self._update(
                video_id, status="failed", error=VideoError(message="internal error while encoding; see the server log")
            )
        finally:
            self._upload_jobs.pop(video_id, None)
            release()

    def _update(self, video_id: str, **changes: object) -> VideoObject | None:
        record = self.store.get(video_id)
        if record is None:  # deleted meanwhile
            return None
        record = record.model_copy(update=changes)
        self.store.add(record, self.store.path_of(video_id))
        return record

    def delete_upload(self, video_id: str) -> None:
        """Remove an upload, cancel its encode, and drop its encoding from memory and the disk cache.

        The disk entry stays when another upload has the same encoding (same content and frames).
        """
        self.store.require(video_id)
        job = self._upload_jobs.pop(video_id, None)
        if job is not None:
            job.cancelled.set()
        key = self.store.cache_keys.get(video_id)
        self.store.remove(video_id)
        if key is not None and key not in self.store.cache_keys.values():
            self.memory.drop(key)
            self.chat.cache.path_of(key).unlink(missing_ok=True)
