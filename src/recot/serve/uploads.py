"""Uploaded videos: streamed to disk under server-chosen names, with a record and a thumbnail strip each.

Layout under ``--upload-dir``::

    vid-<24 hex>.<ext>          the video (extension from a fixed list, else .bin)
    vid-<24 hex>.json           its record (:class:`recot.serve.schemas.VideoObject`), written atomically
    vid-<24 hex>.thumbs.jpg     thumbnails side by side, for the page's timeline
    .inline/                    short-lived files of data: and remote URLs

The client's file name is kept only for display; it never becomes a path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from recot.data.atomic import atomic_path, atomic_write_text
from recot.serve.errors import APIError, too_large
from recot.serve.schemas import Thumbnails, VideoObject
from recot.video import probe, read_frames

VIDEO_ID = re.compile(r"vid-[0-9a-f]{24}")
VIDEO_SUFFIXES = frozenset(
    [".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".gif", ".jpg", ".jpeg", ".png", ".webp", ".bmp"]
)
#: Bytes a text form field (``frames``, ``fps``...) may have.
MAX_FIELD_BYTES = 1024
THUMB_HEIGHT = 72


def safe_suffix(filename: str) -> str:
    """The file's extension if it is a known video or image extension, else ``.bin``."""
    suffix = PurePosixPath(filename).suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ".bin"


def display_name(filename: str) -> str:
    """The last component of a client's file name (either slash), at most 200 characters."""
    name = PureWindowsPath(PurePosixPath(filename).name).name
    return (name or "video")[:200]


class VideoStore:
    """The uploaded videos of one server and their records (kept in memory, mirrored to disk)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.inline_dir = self.root / ".inline"
        self.inline_dir.mkdir(exist_ok=True)
        self._records: dict[str, VideoObject] = {}
        self._files: dict[str, Path] = {}
        self.cache_keys: dict[str, str] = {}  # id -> cache key of its encoding, once known
        self._load()

    def _load(self) -> None:
        for meta in sorted(self.root.glob("vid-*.json")):
            try:
                stored = json.loads(meta.read_text())
                record = VideoObject.model_validate(stored["record"])
                file = self.root / PurePosixPath(stored["file"]).name
            except (OSError, ValueError, KeyError):
                continue
            if VIDEO_ID.fullmatch(record.id) and file.is_file():
                if record.status in ("queued", "encoding"):  # the encode was cut off: it starts again
                    record.status, record.progress = "queued", 0.0
                self._records[record.id] = record
                self._files[record.id] = file
                if isinstance(stored.get("cache_key"), str):
                    self.cache_keys[record.id] = stored["cache_key"]

    # ----- records ----------------------------------------------------------------------
    def new_id(self) -> str:
        return f"vid-{secrets.token_hex(12)}"

    def get(self, video_id: str) -> VideoObject | None:
        return self._records.get(video_id) if VIDEO_ID.fullmatch(video_id) else None

    def require(self, video_id: str) -> VideoObject:
        """The record of ``video_id``; 404 when there is none."""
        record = self.get(video_id)
        if record is None:
            raise APIError(404, f"unknown video id {video_id!r}", param="video_id", code="video_not_found")
        return record

    def path_of(self, video_id: str) -> Path:
        return self._files[video_id]

    def thumbs_path(self, video_id: str) -> Path:
        return self.root / f"{video_id}.thumbs.jpg"

    def all(self) -> list[VideoObject]:
        """Every record, newest first."""
        return sorted(self._records.values(), key=lambda r: (-r.created_at, r.id))

    def add(self, record: VideoObject, file: Path) -> None:
        self._records[record.id] = record
        self._files[record.id] = file
        self.save(record)

    def save(self, record: VideoObject) -> None:
        """Write the record to disk (on status changes, not on every progress step)."""
        if record.id in self._records:
            payload = {
                "record": record.model_dump(mode="json"),
                "file": self._files[record.id].name,
                "cache_key": self.cache_keys.get(record.id),
            }
            atomic_write_text(self.root / f"{record.id}.json", json.dumps(payload))

    def remove(self, video_id: str) -> None:
        """Forget a video and delete its files."""
        self._records.pop(video_id, None)
        self.cache_keys.pop(video_id, None)
        file = self._files.pop(video_id, None)
        for path in (file, self.root / f"{video_id}.json", self.thumbs_path(video_id)):
            if path is not None:
                path.unlink(missing_ok=True)

    # ----- receiving --------------------------------------------------------------------
    async def receive(self, request: Request, max_bytes: int) -> tuple[VideoObject, Path, dict[str, str]]:
        """Stream a multipart upload's ``file`` part to disk; returns its record, path and text fields.

        Raises :class:`APIError`: 415 for a body that is not multipart, 413 past
        ``max_bytes`` (nothing is left on disk), 400 without a ``file`` part or
        when it is empty.
        """
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or not params.get(b"boundary"):
            raise APIError(
                415, "upload the video as multipart/form-data with a 'file' field", code="unsupported_media_type"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
            raise too_large("the video", max_bytes)
        video_id = self.new_id()
        receiver = _MultipartReceiver(max_bytes)
        parser = MultipartParser(params[b"boundary"], receiver.callbacks())
        # Written under a hidden temporary name and renamed into place once complete.
        tmp = self.root / f".{video_id}.upload"
        receiver.target = tmp
        try:
            try:
                async for chunk in request.stream():
                    parser.write(chunk)
                parser.finalize()
            finally:
                receiver.close()
            if receiver.filename is None:
                raise APIError(400, "the upload has no 'file' field", param="file", code="missing_file")
            if receiver.size == 0:
                raise APIError(400, "the uploaded file is empty", param="file", code="empty_file")
            final = self.root / f"{video_id}{safe_suffix(receiver.filename)}"
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        record = VideoObject(
            id=video_id, filename=display_name(receiver.filename), bytes=receiver.size, created_at=int(time.time())
        )
        return record, final, receiver.fields


class _MultipartReceiver:
    """Callbacks of python-multipart's streaming parser: the ``file`` part to ``target``, text fields to memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.target: Path | None = None
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self._file: Any = None
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._buffer = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._append_header_field(data[start:end]),
            "on_header_value": lambda data, start, end: self._append_header_value(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._field, self._value, self._name = {}, b"", b"", None
        self._buffer = bytearray()

    def _append_header_field(self, data: bytes) -> None:
        self._field += data

    def _append_header_value(self, data: bytes) -> None:
        self._value += data

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.filename is not None:
                raise APIError(400, "the upload has more than one 'file' field", param="file")
            self.filename = params.get(b"filename", b"video").decode("utf-8", "replace")
            self._file = open(self.target, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            self.size += end - start
            if self.size > self.max_bytes:
                raise too_large("the video", self.max_bytes)
            self._file.write(data[start:end])
        else:
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise APIError(
                    400, f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes", param=self._name
                )

    def _part_end(self) -> None:
        if self._name == "file":
            self._file.close()
            self._file = None
        elif self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def make_thumbnails(video: Path, out: Path, count: int, url: str) -> Thumbnails | None:
    """A JPEG strip of ``count`` frames spread over the video (an image: one), written atomically to ``out``."""
    if count < 1:
        return None
    info = probe(video)
    count = 1 if info.is_image else min(count, info.num_frames)
    height = THUMB_HEIGHT
    width = max(16, min(4 * height, round(height * info.width / max(info.height, 1))))
    batch = read_frames(video, num_frames=count, size=(width, height))
    strip = np.concatenate(list(batch.frames), axis=1)
    with atomic_path(out, suffix=".jpg") as tmp:
        Image.fromarray(strip).save(tmp, format="JPEG", quality=82)
    return Thumbnails(
        count=len(batch), width=width, height=height, times=[round(t, 3) for t in batch.timestamps.tolist()], url=url
    )
