"""Where a chat request's video comes from, with strict limits on what the server may read.

Accepted ``video_url`` / ``image_url`` forms:

* ``data:<type>;base64,<data>``: decoded (at most ``--max-upload-bytes``) into a short-lived file;
* ``recot-video://ID``: a video uploaded with ``POST /v1/videos``;
* a path relative to ``--media-dir``, or an absolute path or ``file://`` URL inside it; only with
  ``--media-dir`` (off by default). The path is resolved (symbolic links followed, ``..`` applied)
  and must still lie inside the media folder, or it is refused before anything is read;
* ``http(s)://``: only with ``--allow-remote-media`` (refused otherwise), fetched with a size and time limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from recot.serve.errors import APIError, too_large
from recot.serve.settings import ServeSettings
from recot.serve.uploads import VideoStore, safe_suffix

UPLOAD_SCHEME = "recot-video://"
#: File extensions for data: URL media types, so images are read as images.
MEDIA_TYPE_SUFFIXES = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
    "video/x-msvideo": ".avi", "video/mpeg": ".mpg", "video/ogg": ".ogv", "image/png": ".png",
    "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif", "image/bmp": ".bmp",
}  # fmt: skip


@dataclass(frozen=True)
class MediaSource:
    """A readable local file for a request's media; ``label`` names it in messages without server paths."""

    path: Path
    label: str
    upload_id: str | None = None


class MediaResolver:
    """Turns a request's media URL into a local file, enforcing ``--media-dir`` and the remote switch."""

    def __init__(self, settings: ServeSettings, store: VideoStore) -> None:
        self.settings = settings
        self.store = store
        self.media_root = Path(os.path.realpath(settings.media_dir)) if settings.media_dir is not None else None

    @asynccontextmanager
    async def open(self, url: str, param: str) -> AsyncIterator[MediaSource]:
        """The file behind ``url`` for the duration of the block (short-lived files are deleted after it)."""
        url = url.strip()
        if not url:
            raise APIError(400, "the media URL is empty", param=param, code="invalid_url")
        lowered = url[:16].lower()
        if lowered.startswith("data:"):
            path = await self._from_data_url(url, param)
            async with _deleted_after(path):
                yield MediaSource(path, "the data: URL video")
        elif lowered.startswith(UPLOAD_SCHEME):
            yield self._upload(url[len(UPLOAD_SCHEME) :], param)
        elif lowered.startswith(("http://", "https://")):
            path = await self._fetch(url, param)
            async with _deleted_after(path):
                yield MediaSource(path, f"the video at {url}")
        else:
            yield self._local(url, param)

    # ----- uploads ----------------------------------------------------------------------
    def _upload(self, video_id: str, param: str) -> MediaSource:
        record = self.store.get(video_id)
        if record is None:
            raise APIError(404, f"unknown video id {video_id!r}", param=param, code="video_not_found")
        if record.status == "failed":
            reason = record.error.message if record.error else "it could not be encoded"
            raise APIError(400, f"video {video_id} cannot be used: {reason}", param=param, code="video_failed")
        return MediaSource(self.store.path_of(video_id), f"video {video_id}", upload_id=video_id)

    # ----- local files ---------------------------------------------------------------------
    def _local(self, url: str, param: str) -> MediaSource:
        if url.lower().startswith("file:"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise APIError(400, f"file URL {url!r} names a host; only local files under --media-dir", param=param)
            raw = unquote(parts.path)
        elif ":" in url.split("/", 1)[0] and not Path(url).is_absolute():
            scheme = url.split(":", 1)[0]
            raise APIError(
                400,
                f"unsupported URL scheme {scheme!r}; use data:, recot-video://ID, a path under --media-dir or http(s)",
                param=param,
                code="invalid_url",
            )
        else:
            raw = url
        if self.media_root is None:
            raise APIError(
                403,
                "local paths are not accepted: the server was started without --media-dir",
                param=param,
                code="media_dir_off",
            )
        if "\0" in raw:
            raise APIError(400, "the path contains a NUL character", param=param, code="invalid_url")
        candidate = Path(raw) if Path(raw).is_absolute() else self.media_root / raw
        resolved = Path(os.path.realpath(candidate))  # symbolic links followed, '..' applied
        if resolved != self.media_root and self.media_root not in resolved.parents:
            raise APIError(403, f"{raw!r} is outside --media-dir", param=param, code="outside_media_dir")
        if not resolved.is_file():
            raise APIError(404, f"no file {raw!r} under --media-dir", param=param, code="file_not_found")
        return MediaSource(resolved, repr(raw))

    # ----- data: URLs ----------------------------------------------------------------------
    async def _from_data_url(self, url: str, param: str) -> Path:
        header, sep, payload = url.partition(",")
        if not sep:
            raise APIError(400, "the data: URL has no ',' before its data", param=param, code="invalid_data_url")
        fields = header[len("data:") :].split(";")
        media_type = fields[0].strip().lower() or "application/octet-stream"
        if "base64" not in [f.strip().lower() for f in fields[1:]]:
            raise APIError(
                400,
                "the data: URL must be base64-encoded (data:<type>;base64,...)",
                param=param,
                code="invalid_data_url",
            )
        if not media_type.startswith(("video/", "image/")) and media_type != "application/octet-stream":
            raise APIError(
                400, f"the data: URL holds {media_type!r}, not a video or image", param=param, code="invalid_data_url"
            )
        limit = self.settings.max_upload_bytes
        if len(payload) // 4 * 3 > limit + 2:
            raise too_large("the data: URL video", limit, param)
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise APIError(
                400, f"the data: URL is not valid base64 ({exc})", param=param, code="invalid_base64"
            ) from exc
        if not data:
            raise APIError(400, "the data: URL holds no data", param=param, code="invalid_data_url")
        path = self._inline_path(MEDIA_TYPE_SUFFIXES.get(media_type, ".bin"))
        await asyncio.to_thread(_write_new, path, data)
        return path

    def _inline_path(self, suffix: str) -> Path:
        return self.store.inline_dir / f"{secrets.token_hex(12)}{suffix}"

    # ----- remote --------------------------------------------------------------------------
    async def _fetch(self, url: str, param: str) -> Path:
        if not self.settings.allow_remote_media:
            raise APIError(
                403,
                "remote media URLs are refused: the server was started without --allow-remote-media",
                param=param,
                code="remote_media_off",
            )
        import httpx

        limit = self.settings.max_upload_bytes
        path = self._inline_path(_url_suffix(url))
        try:
            async with httpx.AsyncClient(follow_redirects=True, timeout=self.settings.remote_timeout) as client:
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise APIError(
                            400, f"fetching {url} gave HTTP {response.status_code}", param=param, code="fetch_failed"
                        )
                    size = 0
                    with open(path, "xb") as out:
                        async for block in response.aiter_bytes():
                            size += len(block)
                            if size > limit:
                                raise too_large(f"the video at {url}", limit, param)
                            out.write(block)
        except httpx.HTTPError as exc:
            path.unlink(missing_ok=True)
            raise APIError(400, f"cannot fetch {url}: {exc}", param=param, code="fetch_failed") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


def _url_suffix(url: str) -> str:
    return safe_suffix(urlsplit(url).path)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as out:
        out.write(data)


@asynccontextmanager
async def _deleted_after(path: Path) -> AsyncIterator[None]:
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
