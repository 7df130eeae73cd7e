"""The encode-once cache: hits skip the vision tower, corrupt entries are recomputed, LRU eviction, locking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from engine_fixtures import CallCounter, tiny_chat, write_video
from recot.engine import CacheCorruptWarning, EncodingCache, FrameSampling, GenerationOptions
from recot.engine.cache import parse_size, resolve_cache_dir
from recot.model.videoxl_pro import EncodedVideo

OPTIONS = GenerationOptions(max_new_tokens=10, keep_ratio=0.6)
SAMPLING = FrameSampling(num_frames=24)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "v.mp4", num_frames=60)


def test_cache_hit_same_answer_without_vision_tower(tmp_path, video) -> None:
    chat = tiny_chat(tmp_path / "cache")
    counter = CallCounter(chat.model.vision_tower)
    first = chat.ask(video, "What happens?", OPTIONS, SAMPLING)
    assert not first.cache_hit and counter.frames == 24
    second = chat.ask(video, "What happens?", OPTIONS, SAMPLING)
    assert second.cache_hit
    assert counter.frames == 24, "a cache hit must not run the vision tower"
    assert second.token_ids == first.token_ids and second.answer == first.answer

    # A new VideoChat (another process, in effect) over the same cache also hits.
    other = tiny_chat(tmp_path / "cache")
    other_counter = CallCounter(other.model.vision_tower)
    third = other.ask(video, "What happens?", OPTIONS, SAMPLING)
    assert third.cache_hit and other_counter.calls == 0 and third.token_ids == first.token_ids
    # A cached encoding still says which frames it holds.
    fresh = chat.encode(video, SAMPLING, use_cache=False)
    cached = other.encode(video, SAMPLING)
    assert cached.cache_hit and cached.frame_indices == fresh.frame_indices and len(fresh.frame_indices) == 24


def test_key_depends_on_frames_weights_and_content(tmp_path, video) -> None:
    chat = tiny_chat(tmp_path / "cache")
    base = chat.cache.key(video, chat.plan(video, SAMPLING).indices, chat.model_id)
    assert chat.cache.key(video, chat.plan(video, FrameSampling(num_frames=25)).indices, chat.model_id) != base
    changed = tiny_chat(tmp_path / "cache")
    with torch.no_grad():
        changed.model.projector[0].bias[0] += 1e-3
    assert changed.cache.key(video, changed.plan(video, SAMPLING).indices, changed.model_id) != base
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(video.read_bytes())
    assert chat.cache.key(copy, chat.plan(copy, SAMPLING).indices, chat.model_id) == base  # same content, other path
    other = write_video(tmp_path / "other.mp4", num_frames=60, seed=1)
    assert chat.cache.key(other, chat.plan(other, SAMPLING).indices, chat.model_id) != base


@pytest.mark.parametrize("damage", ["truncate", "flip_tensor_bytes", "stale_format"])
def test_corrupt_or_stale_entry_is_recomputed(tmp_path, video, damage) -> None:
    chat = tiny_chat(tmp_path / "cache")
    counter = CallCounter(chat.model.vision_tower)
    first = chat.encode(video, SAMPLING)
    path = chat.cache.path_of(first.key)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip_tensor_bytes":
        data[-100] ^= 0xFF  # inside the tensor data, past the header
        path.write_bytes(bytes(data))
    else:
        with open(path, "r+b") as f:  # same-length edit of the JSON header's format field
            header = bytes(data[: 8 + int.from_bytes(data[:8], "little")])
            f.write(header.replace(b'"format":"1"', b'"format":"0"'))
    frames_before = counter.frames
    with pytest.warns(CacheCorruptWarning, match="corrupt or stale"):
        again = chat.encode(video, SAMPLING)
    assert not again.cache_hit
    assert counter.frames == frames_before + 24
    assert torch.equal(again.encoded.tokens, first.encoded.tokens)
    assert chat.encode(video, SAMPLING).cache_hit  # the rewritten entry is sound


def _fake(groups: int) -> EncodedVideo:
    return EncodedVideo(torch.full((groups, 9, 64), float(groups)), torch.arange(groups, dtype=torch.float64))


def test_lru_eviction(tmp_path) -> None:
    entry_size = 10 * 9 * 64 * 4 + 10 * 8  # tensor bytes of one entry
    cache = EncodingCache(tmp_path, max_bytes=int(2.5 * entry_size) + 3000)  # two entries with headers fit
    for key in ("a", "b"):
        cache.store(key, _fake(10), {"frames": 40})
        time.sleep(0.02)
    assert cache.load("a") is not None  # "a" is now the most recently used
    time.sleep(0.02)
    cache.store("c", _fake(10), {"frames": 40})
    assert sorted(e.key for e in cache.entries()) == ["a", "c"]
    assert cache.total_bytes() <= cache.max_bytes
    # An entry larger than the whole cache is not stored.
    small = EncodingCache(tmp_path / "small", max_bytes=100)
    assert small.store("big", _fake(10), {}) is None and small.entries() == []


def test_clear_and_listing(tmp_path) -> None:
    cache = EncodingCache(tmp_path, "1MB")
    cache.store("k1", _fake(2), {"video": "/x.mp4", "frames": 8})
    [entry] = cache.entries()
    assert entry.key == "k1" and entry.metadata["video"] == "/x.mp4" and entry.metadata["frames"] == "8"
    assert cache.clear() == 1 and cache.entries() == []


def test_clear_spares_an_entry_being_written(tmp_path) -> None:
    cache = EncodingCache(tmp_path, "1MB")
    cache.store("done", _fake(2), {})
    cache.file_digest(cache.path_of("done"))  # leaves a digest memo
    stale = cache.entries_dir / ".stale.safetensors.0.tmp"  # left by a crashed writer
    stale.write_bytes(b"x")

    def compute() -> tuple[EncodedVideo, dict]:
        # Another process clears the cache while this one is writing key "busy".
        in_flight = cache.entries_dir / ".busy.safetensors.1.tmp"
        in_flight.write_bytes(b"x")
        assert cache.clear() == 1
        assert in_flight.exists() and (cache.entries_dir / "busy.lock").exists()
        in_flight.unlink()
        return _fake(2), {"frames": 8}

    encoded, metadata, hit = cache.get_or_compute("busy", compute)
    assert not hit and metadata == {"frames": "8"}
    assert not stale.exists() and list(cache.digests_dir.iterdir()) == []
    loaded, stored = cache.load("busy")
    assert torch.equal(loaded.tokens, encoded.tokens) and stored["frames"] == metadata["frames"]
    assert [e.key for e in cache.entries()] == ["busy"]


@pytest.mark.slow
def test_two_processes_encode_one_video_once(tmp_path, video) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from engine_fixtures import tiny_chat
        from recot.engine import FrameSampling
        chat = tiny_chat(sys.argv[1])
        enc = chat.encode({str(video)!r}, FrameSampling(num_frames=24))
        print(json.dumps({{"hit": enc.cache_hit, "sum": float(enc.encoded.tokens.double().sum())}}))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache")], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["sum"] == results[1]["sum"]
    assert len(list((tmp_path / "cache" / "encoded").glob("*.safetensors"))) == 1
    assert not list((tmp_path / "cache" / "encoded").glob("*.tmp"))


def test_cache_location_and_size_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RECOT_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("RECOT_CACHE_DIR")
    assert resolve_cache_dir().name == "recot"
    assert parse_size("1.5GB") == int(1.5 * 1024**3) and parse_size("512m") == 512 * 1024**2 and parse_size(7) == 7
    monkeypatch.setenv("RECOT_CACHE_SIZE", "3k")
    assert parse_size(None) == 3072
    with pytest.raises(ValueError, match="cannot read cache size '20 parsecs'"):
        parse_size("20 parsecs")
