"""iter_frames() / read_frames(): the right frames, true timestamps, batching and seeking."""

from __future__ import annotations

import av
import numpy as np
import pytest

from recot.video import FrameBatch, SamplePlan, iter_frames, plan_frames, probe, read_frames
from recot.video.decode import decoded_frame_count, plan_runs
from video_fixtures import FPS, VFR_PTS, frame_id

CODECS = ["h264_mp4", "h264_mp4_faststart", "hevc_mkv", "vp9_webm", "mpeg4_avi", "mjpeg_avi", "mpeg2_ts", "odd_mp4"]


@pytest.mark.parametrize("name", CODECS)
def test_read_frames_returns_the_planned_frames(videos, name):
    batch = read_frames(videos[name], num_frames=8)
    assert batch.indices.tolist() == [0, 12, 25, 38, 50, 63, 76, 89]
    assert [frame_id(f) for f in batch.frames] == batch.indices.tolist()
    np.testing.assert_allclose(batch.timestamps, batch.indices / FPS, atol=1e-3)
    assert batch.frames.dtype == np.uint8 and batch.frames.shape[3] == 3


def test_av1(videos):
    batch = read_frames(videos["av1_mkv"], fps=10)
    assert batch.indices.tolist() == list(range(0, 30, 3))
    assert [frame_id(f) for f in batch.frames] == batch.indices.tolist()


def test_resize_to_model_size(videos):
    square = read_frames(videos["h264_mp4"], num_frames=3, size=32)
    assert square.frames.shape == (3, 32, 32, 3)
    assert [frame_id(f) for f in square.frames] == [0, 44, 89]
    wide = read_frames(videos["h264_mp4"], num_frames=3, size=(40, 20))
    assert wide.frames.shape == (3, 20, 40, 3)


def test_rotation_is_applied(videos):
    batch = read_frames(videos["rotated_mp4"], num_frames=4)
    assert batch.frames.shape == (4, 64, 48, 3)  # displayed portrait
    assert [frame_id(np.rot90(f, -1)) for f in batch.frames] == [0, 29, 59, 89]
    # the red mark drawn top-left ends up bottom-left after the 90 degree counter-clockwise display rotation
    assert batch.frames[0, -4, 4].tolist() == pytest.approx([255, 0, 0], abs=40)
    resized = read_frames(videos["rotated_mp4"], num_frames=1, size=(30, 40))
    assert resized.frames.shape == (1, 40, 30, 3)


def test_variable_frame_rate_timestamps_are_presentation_times(videos):
    batch = read_frames(videos["vfr_mkv"])
    assert [frame_id(f) for f in batch.frames] == list(range(len(VFR_PTS)))
    np.testing.assert_allclose(batch.timestamps, np.array(VFR_PTS) / 1000)


def test_non_zero_start_time(videos):
    batch = read_frames(videos["start_mkv"], fps=1)
    assert batch.indices.tolist() == [0, 30, 60]
    assert [frame_id(f) for f in batch.frames] == [0, 30, 60]
    np.testing.assert_allclose(batch.timestamps, [0.0, 1.0, 2.0], atol=1e-3)


def test_a_plan_with_repeated_indices_gives_identical_frames(videos):
    info = probe(videos["vfr_mkv"])  # plan_frames never repeats a frame, but a hand-made plan may
    indices = np.array([0, 0, 3, 3, 3, 7])
    plan = SamplePlan(info=info, indices=indices, timestamps=info.frame_times[indices], rule="by hand")
    batch = FrameBatch.concat(list(iter_frames(videos["vfr_mkv"], plan, batch_size=4)))
    assert batch.indices.tolist() == [frame_id(f) for f in batch.frames] == indices.tolist()
    assert np.array_equal(batch.frames[0], batch.frames[1]) and np.array_equal(batch.frames[2], batch.frames[4])


@pytest.mark.parametrize("name", ["long_gop_mp4", "short_gop_mp4"])
def test_streaming_equals_one_shot(videos, name):
    plan = plan_frames(probe(videos[name]))
    batches = list(iter_frames(videos[name], plan, batch_size=7, size=24))
    assert [len(b) for b in batches] == [7] * 34 + [2]
    streamed = FrameBatch.concat(batches)
    one_shot = read_frames(videos[name], size=24)
    assert np.array_equal(streamed.frames, one_shot.frames)
    assert streamed.indices.tolist() == one_shot.indices.tolist() == list(range(240))
    assert [frame_id(f) for f in streamed.frames] == list(range(240))


def test_seek_plan_by_cost(videos):
    long_gop, short_gop = probe(videos["long_gop_mp4"]), probe(videos["short_gop_mp4"])
    sparse = np.array([3, 60, 120, 200])
    runs = plan_runs(long_gop, sparse)  # one keyframe: seeking cannot help, decode straight through
    assert [(r.seek_to, r.indices.tolist()) for r in runs] == [(None, [3, 60, 120, 200])]
    runs = plan_runs(short_gop, sparse)
    assert [(r.seek_to, r.indices.tolist()) for r in runs] == [(None, [3]), (60, [60]), (120, [120]), (200, [200])]
    assert decoded_frame_count(short_gop, runs) == 4 + 1 + 1 + 1
    dense = np.arange(0, 240, 10)  # gaps smaller than the seek cost: one pass
    assert len(plan_runs(short_gop, dense)) == 1


def test_seeking_gives_the_same_pixels_as_sequential_decoding(videos):
    path = videos["short_gop_mp4"]
    plan = plan_frames(probe(path), num_frames=9)
    assert len(plan_runs(plan.info, plan.indices)) > 1  # this plan seeks
    sought = read_frames(path, num_frames=9)
    everything = read_frames(path)
    assert np.array_equal(sought.frames, everything.frames[plan.indices])


def test_bigbuckbunny_against_plain_pyav(bigbuckbunny):
    batch = read_frames(bigbuckbunny, num_frames=6)
    assert batch.indices.tolist() == [0, 26, 52, 78, 104, 131]
    np.testing.assert_allclose(batch.timestamps, batch.indices / 25.0)
    with av.open(str(bigbuckbunny)) as c:  # independent reference: decode everything, pick by position
        reference = [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i in set(batch.indices)]
    assert np.array_equal(batch.frames, np.stack(reference))


def test_bigbuckbunny_streaming_equals_one_shot(bigbuckbunny):
    plan = plan_frames(probe(bigbuckbunny), fps=4)
    streamed = FrameBatch.concat(list(iter_frames(bigbuckbunny, plan, batch_size=5, size=64)))
    one_shot = read_frames(bigbuckbunny, fps=4, size=64)
    assert len(streamed) == 22 and np.array_equal(streamed.frames, one_shot.frames)
    on_screen = np.floor(np.arange(22) * 25 / 4).astype(int)  # the frame shown at k/4 s at 25 fps
    assert streamed.indices.tolist() == on_screen.tolist()
    np.testing.assert_allclose(streamed.timestamps, on_screen / 25, atol=1e-6)


def test_images_and_frame_directories(videos):
    png = read_frames(videos["png"], size=32)
    assert png.frames.shape == (1, 32, 32, 3) and frame_id(png.frames[0]) == 5
    jpg = read_frames(videos["jpg_exif"])  # EXIF orientation 6 applied: rotate back to read the stripes
    assert jpg.frames.shape == (1, 64, 48, 3) and frame_id(np.rot90(jpg.frames[0], 1)) == 7
    frames = read_frames(videos["frames_dir"], num_frames=4)
    assert [frame_id(f) for f in frames.frames] == frames.indices.tolist() == [0, 3, 7, 11]
    np.testing.assert_allclose(frames.timestamps, [0, 3, 7, 11])


def test_plan_for_another_file_is_refused(videos):
    plan = plan_frames(probe(videos["h264_mp4"]), num_frames=2)
    with pytest.raises(ValueError, match="plan was made for"):
        next(iter_frames(videos["hevc_mkv"], plan))
