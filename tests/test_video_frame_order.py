"""Every frame a plain sequential decode yields is reachable, with the same pixels and timestamps.

The reference is PyAV decoding the file front to back with no seeking and no
skipping: frame ``k`` is its ``k``-th output (display order), and the frame
times are its output pts, sorted. (For B-frames in AVI and for packed B-frames
the pts FFmpeg attaches to each output frame are not in display order, but as a
set they are the display slots; sorting them gives each output its time.)

The layouts covered: B-frames in AVI (H.264 with a B-pyramid; MPEG-4 Part 2 with
open GOPs; the same MPEG-4 stream as DivX "packed B-frames"), H.264/HEVC with
B-frames in MP4 and Matroska, variable frame rate, a non-zero start time, and
Debian opencv-doc's example AVIs where installed (Megamind.avi has packed
B-frames, tree.avi empty "dropped frame" entries).
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from recot.video import PartialDecodeWarning, UnsupportedVideoError, plan_frames, probe, read_frames
from recot.video.backends import choose_backend
from video_fixtures import FPS, N, corrupt_packets, frame_id

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
# name -> FFmpeg's pts do not follow display order, so frames are numbered by decoding from the start
# (MPEG-4 Part 2 B-frames in AVI get correct guessed pts, so that file still seeks)
LAYOUTS = {
    "mpeg4_packed_avi": True,
    "mpeg4_bframes_avi": False,
    "h264_bframes_avi": True,
    "h264_mp4": False,
    "hevc_mkv": False,
    "vfr_mkv": False,
    "start_mkv": False,
}


def sequential_decode(path: Path, keep: set[int] | None = None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The reference: ``{k: RGB of the k-th frame out}`` (only ``keep``, default all) and every frame's time.

    Converted like recot converts (swscale, bicubic flags) so pixels compare exactly.
    """
    frames: dict[int, np.ndarray] = {}
    pts: list[int] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        for k, frame in enumerate(container.decode(stream)):
            pts.append(frame.pts)
            if keep is None or k in keep:
                frames[k] = frame.to_ndarray(width=frame.width, height=frame.height, format="rgb24",
                                             interpolation="BICUBIC")
        times = np.sort(np.asarray(pts, dtype=np.int64)) * float(stream.time_base) - start
    return frames, times


def sequential_decode_until_error(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """The frames (and their pts) a plain sequential decode outputs before the decoder's first error."""
    frames, pts = [], []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(width=frame.width, height=frame.height, format="rgb24",
                                               interpolation="BICUBIC"))
                pts.append(frame.pts)
        except av.error.InvalidDataError:
            pass
    return frames, pts


@pytest.fixture(scope="module")
def references(videos):
    return {name: sequential_decode(videos[name]) for name in LAYOUTS}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_probe_indexes_exactly_the_frames_the_decoder_outputs(videos, references, name):
    frames, times = references[name]
    info = probe(videos[name])
    assert info.num_frames == len(frames) == (N if name != "vfr_mkv" else 15)
    np.testing.assert_allclose(info.frame_times, times, atol=1e-9)
    assert info.sequential_only == LAYOUTS[name]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_frame_equals_the_sequential_decode(videos, references, name):
    frames, times = references[name]
    assert [frame_id(frames[k]) for k in range(len(frames))] == list(range(len(frames)))  # display order
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = read_frames(videos[name], backend="pyav")
    assert batch.indices.tolist() == list(range(len(frames)))
    np.testing.assert_array_equal(batch.frames, np.stack([frames[k] for k in range(len(frames))]))
    np.testing.assert_allclose(batch.timestamps, times, atol=1e-9)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize(
    "rule",
    [{"fps": 1}, {"fps": 7}, {"num_frames": 12}, {"num_frames": 4}, {"num_frames": 3, "start": 1.0, "end": 2.0}],
    ids=["fps1", "fps7", "uniform12", "sparse4", "range"],
)
def test_sampled_frames_equal_the_sequential_decode(videos, references, name, rule):
    frames, times = references[name]
    plan = plan_frames(probe(videos[name]), **rule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no frame lost, no "data ends early"
        batch = read_frames(videos[name], backend="pyav", **rule)
    assert batch.indices.tolist() == plan.indices.tolist()
    np.testing.assert_array_equal(batch.frames, np.stack([frames[k] for k in plan.indices.tolist()]))
    np.testing.assert_allclose(batch.timestamps, times[plan.indices], atol=1e-9)


def test_packed_b_frames_are_what_the_fixture_claims(videos):
    """The fixture really is the hard case: FFmpeg's output pts run out of display order."""
    with av.open(str(videos["mpeg4_packed_avi"])) as container:
        stream = container.streams.video[0]
        sizes = [p.size for p in container.demux(stream) if p.size]
    with av.open(str(videos["mpeg4_packed_avi"])) as container:
        out_pts = [f.pts for f in container.decode(video=0)]
    assert len(sizes) == N and sum(size < 20 for size in sizes) > 10  # not-coded placeholder VOPs
    assert any(b < a for a, b in itertools.pairwise(out_pts))  # output pts are not monotonic
    assert sorted(out_pts) == list(range(1, N + 1))


def test_auto_never_hands_a_sequential_only_stream_to_torchcodec(videos):
    info = probe(videos["mpeg4_packed_avi"])
    assert choose_backend(info, "auto") == choose_backend(info, "auto", (info.width, info.height)) == "pyav"
    with pytest.raises(UnsupportedVideoError, match="timestamps are not in display order.*backend='pyav' or 'auto'"):
        choose_backend(info, "torchcodec")


def test_damaged_packed_stream_stops_where_the_decoder_does_and_says_so(videos, tmp_path):
    damaged = corrupt_packets(videos["mpeg4_packed_avi"], tmp_path / "damaged.avi", first=40)  # garbage from 40 on
    frames, _ = sequential_decode_until_error(damaged)
    assert 20 < len(frames) < N
    with pytest.warns(PartialDecodeWarning) as caught:
        batch = read_frames(damaged, backend="pyav")
    assert batch.indices.tolist() == [frame_id(f) for f in batch.frames] == list(range(len(frames)))
    np.testing.assert_array_equal(batch.frames, np.stack(frames))
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{damaged}: decoding stopped after frame {len(frames) - 1} at {batch.timestamps[-1]:.3f} s (decoder error: "
        f"Invalid data found when processing input); {N - len(frames)} of {N} planned frames, "
        f"from {(len(frames) + 1) / FPS:.3f} s on, are missing"
    )


def test_cut_packed_stream_matches_the_sequential_decode(videos, tmp_path):
    data = videos["mpeg4_packed_avi"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(PartialDecodeWarning, match=r"declares 3.00 s but its video data ends at .* the file may be"):
        info = probe(cut)
    frames, times = sequential_decode(cut)
    with pytest.warns(PartialDecodeWarning, match="the file may be truncated"):  # read_frames probes again
        batch = read_frames(cut, backend="pyav")
    assert len(batch) == len(frames) == info.num_frames
    np.testing.assert_array_equal(batch.frames, np.stack([frames[k] for k in range(len(frames))]))
    np.testing.assert_allclose(batch.timestamps, times, atol=1e-9)


@pytest.fixture(params=["Megamind.avi", "vtest.avi", "tree.avi"])
def opencv_example(request) -> Path:
    path = OPENCV_DATA / request.param
    if not path.exists():
        pytest.skip(f"{path} is not installed (apt-get install opencv-doc)")
    return path


def test_opencv_example_videos_decode_every_planned_frame(opencv_example):
    rules = [{"fps": 1}, {"num_frames": 16}]  # the two commands: 6 of 12 and 10 of 16 frames came out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning (tree.avi), no lost frames (Megamind.avi)
        info = probe(opencv_example)
        plans = [plan_frames(info, **rule) for rule in rules]
        frames, times = sequential_decode(opencv_example, keep={int(i) for plan in plans for i in plan.indices})
        assert info.num_frames == len(times)
        np.testing.assert_allclose(info.frame_times, times, atol=1e-9)
        for rule, plan in zip(rules, plans, strict=True):
            batch = read_frames(opencv_example, backend="pyav", **rule)
            assert batch.indices.tolist() == plan.indices.tolist()
            np.testing.assert_array_equal(batch.frames, np.stack([frames[k] for k in plan.indices.tolist()]))


def test_fixture_frame_rate_is_the_one_the_tests_assume(references):
    np.testing.assert_allclose(np.diff(references["h264_mp4"][1]), 1 / FPS, atol=1e-6)
