"""The encode-once cache: a video's compressed tokens on disk, reused by every later question.

Layout under the cache root (``--cache-dir``, else ``$RECOT_CACHE_DIR``, else
the user's cache directory)::

    encoded/<key>.safetensors   tokens (G, P, D) + group timestamps (G,), metadata
    encoded/<key>.lock          per-key lock while held: one process encodes, the others wait
    digests/<id>                memo of file content hashes, keyed by path + size + mtime
    models/                     the built-in default model (see ``recot.engine.default_model``)

The key hashes the video's content, the exact frames sampled and the model's
identity (weights, config, dtype, device type). Writes go to a temporary file
renamed into place, so a reader never sees a half-written entry. An entry's
modification time is its last use; when the entries exceed the size limit the
least recently used are deleted. A corrupt entry (unreadable file, wrong
metadata or checksum) is deleted with a warning and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from recot.data.atomic import atomic_path, atomic_write_text, exclusive_lock
from recot.model.encoder import EncodedVideo

#: Bump when the entry layout or the meaning of the tokens changes: older entries become stale.
CACHE_FORMAT = "1"
DEFAULT_CACHE_SIZE = 20 * 1024**3
CACHE_DIR_ENV = "RECOT_CACHE_DIR"
CACHE_SIZE_ENV = "RECOT_CACHE_SIZE"
_SUFFIX = ".safetensors"
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3, "t": 1024**4, "tb": 1024**4}


class CacheCorruptWarning(UserWarning):
    """A cache entry could not be used and is being recomputed."""


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$RECOT_CACHE_DIR``, else ``platformdirs.user_cache_dir("recot")``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir("recot"))


def parse_size(text: str | int | None) -> int:
    """Bytes from ``"20GB"``, ``"512m"``, ``"1.5g"`` or an int; None gives ``$RECOT_CACHE_SIZE`` or 20 GB."""
    if text is None:
        if not os.environ.get(CACHE_SIZE_ENV):
            return DEFAULT_CACHE_SIZE
        try:
            return parse_size(os.environ[CACHE_SIZE_ENV])
        except ValueError as exc:
            raise ValueError(f"${CACHE_SIZE_ENV}: {exc}") from None
    if isinstance(text, int):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read cache size {text!r}; use e.g. 20GB, 512MB or a number of bytes")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 0:
        raise ValueError(f"cache size must be >= 0, got {size}")
    return size


def content_digest(path: str | Path, memo_dir: Path | None = None) -> str:
    """SHA-256 of a file's bytes (of a directory: its files' names and bytes, in name order).

    With ``memo_dir``, the digest of a file is remembered under a key made of
    its resolved path, size, mtime and inode, so an unchanged multi-gigabyte
    video is hashed once.
    """
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stat_key = "\0".join(f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}|{p.stat().st_ino}" for p in files)
    memo = memo_dir / hashlib.sha256(stat_key.encode()).hexdigest() if memo_dir is not None else None
    if memo is not None and memo.is_file():
        cached = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", cached):
            return cached
    digest = hashlib.sha256()
    for p in files:
        if path.is_dir():
            digest.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    hexdigest = digest.hexdigest()
    if memo is not None:
        atomic_write_text(memo, hexdigest)
    return hexdigest


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of tensors (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        # reshape(-1): a 0-dim tensor (a batch norm's num_batches_tracked) cannot be viewed as bytes directly.
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module, checkpoint_dir: Path | None, file_digest: Callable[[Path], str]) -> str:
    """Identity of a model for cache keys: weights, config, dtype and device type.

    Weights loaded from a checkpoint are identified by the hash of its
    safetensors files (``file_digest``, memoised by the cache); otherwise by a
    hash of the state dict.
    """
    files = sorted(checkpoint_dir.glob("*.safetensors")) if checkpoint_dir is not None else []
    if files:
        weights = hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()
    else:
        weights = tensor_digest(dict(model.state_dict()))
    config = json.dumps(model.config.to_json_dict(), sort_keys=True, default=str)
    parts = [weights, config, str(next(model.parameters()).dtype), next(model.parameters()).device.type]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One stored encoding, as listed by :meth:`EncodingCache.entries`.

    ``created`` and ``last_used`` are seconds since the epoch; ``metadata`` is the
    entry's header as stored (strings).
    """

    key: str
    path: Path
    size: int
    last_used: float
    metadata: dict[str, str]

    @property
    def created(self) -> float | None:
        """When the entry was written (None for an unreadable entry)."""
        return _parse(self.metadata.get("created"), float)

    @property
    def frames(self) -> int | None:
        """How many frames were encoded (None for an unreadable entry)."""
        return _parse(self.metadata.get("frames"), int)

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary: key, path, size, created, last_used, frames, video, rule, model_id (or error).

        Counts are ints and times are floats; the list of frame indices is left out.
        """
        record: dict[str, Any] = {"key": self.key, "path": str(self.path), "size": self.size, "created": self.created,
                                  "last_used": self.last_used, "frames": self.frames}  # fmt: skip
        for name in ("video", "rule", "model_id", "error"):
            if name in self.metadata:
                record[name] = self.metadata[name]
        return record


class EncodingCache:
    """Encoded videos on disk with LRU eviction, atomic writes and per-key locks.

    ``max_bytes`` bounds the total size of the entries (0 keeps nothing);
    ``lock_timeout`` is how long to wait for another process encoding the same
    video before giving up with ``TimeoutError``.
    """

    def __init__(self, root: str | Path | None = None, max_bytes: int | str | None = None, lock_timeout: float = 6 * 3600) -> None:
        self.root = resolve_cache_dir(root)
        self.max_bytes = parse_size(max_bytes)
        self.lock_timeout = lock_timeout
        self.entries_dir = self.root / "encoded"
        self.digests_dir = self.root / "digests"

    def _prepare(self) -> None:
        try:
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            self.digests_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create the cache directory {self.root}: {exc}") from exc

    def path_of(self, key: str) -> Path:
        """Where the entry for ``key`` is stored."""
        return self.entries_dir / f"{key}{_SUFFIX}"

    def _lock(self, key: str, timeout: float | None) -> AbstractContextManager[None]:
        return exclusive_lock(self.entries_dir / f"{key}.lock", timeout=timeout)

    def file_digest(self, path: str | Path) -> str:
        """The content hash of a file or directory (a video, a weights shard), memoised in the cache."""
        self._prepare()
        return content_digest(path, self.digests_dir)

    # ----- get / put --------------------------------------------------------
    def key(self, video: str | Path, frame_indices: Sequence[int] | np.ndarray, model_id: str) -> str:
        """The key of a video's encoding: content hash + the frames sampled + the model's identity."""
        frames = hashlib.sha256(np.ascontiguousarray(frame_indices, dtype=np.int64).tobytes()).hexdigest()
        parts = [self.file_digest(video), frames, model_id]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]

    def load(self, key: str) -> tuple[EncodedVideo, dict[str, str]] | None:
        """The entry for ``key``, or None when missing; a corrupt entry is deleted (with a warning)."""
        path = self.path_of(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            problem = _check_entry(key, metadata, tensors)
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            problem = f"unreadable ({exc})"
        if problem:
            warnings.warn(f"cache entry {path} is corrupt or stale: {problem}; recomputing", CacheCorruptWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        # Deleted meanwhile by ``clear`` in another process: the tensors are read already.
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # last use, for LRU eviction
        return EncodedVideo(tensors["tokens"], tensors["timestamps"]), metadata

    def store(self, key: str, encoded: EncodedVideo, metadata: dict[str, Any]) -> Path | None:
        """Write an entry atomically, then evict the least recently used entries over the limit.

        Returns the entry's path, or None when the entry alone exceeds the size limit.
        """
        self._prepare()
        tensors = {"tokens": encoded.tokens.detach().contiguous().cpu(), "timestamps": encoded.timestamps.contiguous().cpu()}
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if nbytes > self.max_bytes:
            return None
        meta = _as_strings(metadata)
        meta.update(format=CACHE_FORMAT, key=key, checksum=tensor_digest(tensors), created=repr(time.time()))
        path = self.path_of(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self.evict(keep=key)
        return path

    def get_or_compute(
        self, key: str, compute: Callable[[], tuple[EncodedVideo, dict[str, Any]]]
    ) -> tuple[EncodedVideo, dict[str, str], bool]:
        """The entry for ``key``, computing and storing it under the key's lock if missing.

        Returns (encoded, metadata, hit). When two processes ask for the same key,
        one computes while the other waits for the lock and then reads the entry.
        """
        self._prepare()
        with self._lock(key, self.lock_timeout):
            found = self.load(key)
            if found is not None:
                return found[0], found[1], True
            encoded, metadata = compute()
            self.store(key, encoded, metadata)
            return encoded, _as_strings(metadata), False

    # ----- listing, eviction, clearing ----------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Every entry, most recently used first (metadata read from the file headers)."""
        if not self.entries_dir.is_dir():
            return []
        found = []
        for path in self.entries_dir.glob(f"*{_SUFFIX}"):
            try:
                stat = path.stat()
                with safe_open(str(path), framework="pt") as f:
                    metadata = dict(f.metadata() or {})
            except FileNotFoundError:  # evicted meanwhile by another process
                continue
            except (SafetensorError, OSError) as exc:
                metadata = {"error": f"unreadable: {exc}"}
            found.append(CacheEntry(path.name[: -len(_SUFFIX)], path, stat.st_size, stat.st_mtime, metadata))
        return sorted(found, key=lambda e: -e.last_used)

    def total_bytes(self) -> int:
        """Total size of the entries in bytes."""
        return sum(e.size for e in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete least recently used entries until the total fits ``max_bytes``; returns their keys.

        Entries whose lock another process holds (being written or read) are skipped.
        """
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed = []
        for entry in reversed(entries):  # least recently used first
            if total <= self.max_bytes:
                break
            if entry.key == keep:
                continue
            try:
                with self._lock(entry.key, 0):
                    entry.path.unlink(missing_ok=True)
            except TimeoutError:
                continue
            total -= entry.size
            removed.append(entry.key)
        return removed

    def clear(self) -> int:
        """Delete every entry and digest memo; returns the number of entries removed.

        The temporary file of an entry, and its lock file, are left alone while
        another process holds that entry's lock (it is being written).
        """
        removed = 0
        for entry in self.entries():
            entry.path.unlink(missing_ok=True)
            removed += 1
        if self.entries_dir.is_dir():
            for leftover in self.entries_dir.iterdir():
                if leftover.suffix == ".lock":  # left by a killed process; taking the lock deletes it
                    self._unlink_unlocked(None, leftover.stem)
                elif leftover.suffix == ".tmp":  # .<key>.safetensors.<random>.tmp
                    self._unlink_unlocked(leftover, leftover.name[1:].split(".")[0])
        if self.digests_dir.is_dir():
            for leftover in self.digests_dir.iterdir():
                leftover.unlink(missing_ok=True)
        return removed

    def _unlink_unlocked(self, path: Path | None, key: str) -> None:
        """Remove ``path`` unless another process holds the lock of ``key``."""
        try:
            with self._lock(key, 0):
                if path is not None:
                    path.unlink(missing_ok=True)
        except TimeoutError:
            pass


def _check_entry(key: str, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str | None:
    """Why an entry cannot be used, or None when it is sound."""
    if metadata.get("format") != CACHE_FORMAT:
        return f"format {metadata.get('format')!r}, expected {CACHE_FORMAT!r}"
    if metadata.get("key") != key:
        return f"written for key {metadata.get('key')!r}"
    if set(tensors) != {"tokens", "timestamps"}:
        return f"tensors {sorted(tensors)}, expected tokens and timestamps"
    tokens, times = tensors["tokens"], tensors["timestamps"]
    if tokens.dim() != 3 or times.shape != (tokens.shape[0],):
        return f"shapes {tuple(tokens.shape)} and {tuple(times.shape)} do not match"
    if tensor_digest(tensors) != metadata.get("checksum"):
        return "checksum mismatch"
    return None


def _parse(text: str | None, kind: type) -> Any:
    """``kind(text)``, or None when the header has no such field or it does not parse."""
    try:
        return kind(text) if text is not None else None
    except ValueError:
        return None


def _as_strings(metadata: dict[str, Any]) -> dict[str, str]:
    """Entry metadata as stored in the safetensors header: strings kept, other values as JSON."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
