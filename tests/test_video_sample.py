"""plan_frames(): the sampling rules over true presentation times."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from recot.video import FrameCountCappedWarning, VideoRangeError, plan_frames, probe
from video_fixtures import FPS, VFR_PTS, N


@pytest.fixture(scope="module")
def cfr(videos):
    return probe(videos["h264_mp4"])


@pytest.fixture(scope="module")
def vfr(videos):
    return probe(videos["vfr_mkv"])


def test_uniform_matches_released_model_rule(cfr):
    plan = plan_frames(cfr, num_frames=8)
    assert plan.indices.tolist() == [0, 12, 25, 38, 50, 63, 76, 89]  # floor(linspace(0, 89, 8))
    np.testing.assert_allclose(plan.timestamps, plan.indices / FPS, atol=1e-6)


def test_asking_for_more_frames_than_the_video_holds_takes_each_once_and_says_so(vfr):
    with pytest.warns(FrameCountCappedWarning) as caught:
        plan = plan_frames(vfr, num_frames=5000)
    assert plan.indices.tolist() == list(range(len(VFR_PTS)))  # every frame once, no duplicates
    np.testing.assert_allclose(plan.timestamps, np.array(VFR_PTS) / 1000)
    assert str(caught[0].message) == f"{vfr.path}: asked for 5000 frames but the video holds 15; using each of them once"
    assert plan.rule == "all 15 frames (asked for 5000)"
    with pytest.warns(FrameCountCappedWarning, match=r"asked for 6 frames but \[1.000, 1.500\] s holds 3;"):
        ranged = plan_frames(vfr, num_frames=6, start=1.0)
    assert ranged.indices.tolist() == [12, 13, 14]


def test_exactly_as_many_frames_as_the_video_holds_is_no_cap(vfr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plan_frames(vfr, num_frames=15).indices.tolist() == list(range(15))


def test_fixed_fps_on_constant_rate(cfr):
    plan = plan_frames(cfr, fps=1)
    assert plan.indices.tolist() == [0, 30, 60]
    np.testing.assert_allclose(plan.timestamps, [0, 1, 2], atol=1e-6)


def test_fixed_fps_picks_frame_on_screen_for_variable_rate(vfr):
    plan = plan_frames(vfr, fps=2)  # instants 0, 0.5, 1.0, 1.5 s
    assert plan.indices.tolist() == [0, 9, 12, 14]
    np.testing.assert_allclose(plan.timestamps, [0.0, 0.4, 1.0, 1.5])


def test_fixed_fps_above_native_rate_gives_each_frame_once(vfr):
    assert plan_frames(vfr, fps=1000).indices.tolist() == list(range(len(VFR_PTS)))


def test_max_frames_caps_uniformly(cfr):
    plan = plan_frames(cfr, fps=30, max_frames=10)
    assert plan.indices.tolist() == np.floor(np.linspace(0, N - 1, 10)).astype(int).tolist()
    assert plan_frames(cfr, fps=1, max_frames=10).indices.tolist() == [0, 30, 60]  # under the cap: unchanged


def test_time_range(cfr):
    plan = plan_frames(cfr, num_frames=4, start=1.0, end=2.0)
    assert plan.indices.tolist() == [30, 39, 49, 59]
    assert plan.timestamps.min() >= 1.0 and plan.timestamps.max() < 2.0
    assert plan_frames(cfr, fps=2, start=1.0, end=2.0).indices.tolist() == [30, 45]
    assert plan_frames(cfr, start=2.9, end=100).indices.tolist() == [87, 88, 89]  # end clamped to the video


def test_time_range_is_relative_to_video_start(videos):
    plan = plan_frames(probe(videos["start_mkv"]), num_frames=1, start=1.0)
    assert plan.indices.tolist() == [30]
    assert plan.timestamps[0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 5.0}, "past the end of the video"),
        ({"start": 2.0, "end": 1.0}, "is not after start"),
        ({"start": -1.0}, "negative"),
        ({"start": 1.01, "end": 1.02}, "no frame lies in"),
    ],
)
def test_range_outside_video_raises(cfr, kwargs, message):
    with pytest.raises(VideoRangeError, match=message) as e:
        plan_frames(cfr, **kwargs)
    assert cfr.path in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 4, "fps": 1}, "give num_frames or fps, not both"),
        ({"num_frames": 0}, "num_frames must be >= 1, got 0"),
        ({"num_frames": -3}, "num_frames must be >= 1, got -3"),
        ({"fps": 0}, "fps must be a positive number, got 0"),
        ({"fps": float("inf")}, "fps must be a positive number, got inf"),
        ({"max_frames": 0}, "max_frames must be >= 1, got 0"),
        ({"fps": 1, "max_frames": -1}, "max_frames must be >= 1, got -1"),
    ],
)
def test_invalid_rule_arguments_name_the_parameter(cfr, kwargs, message):
    with pytest.raises(ValueError) as e:
        plan_frames(cfr, **kwargs)
    assert str(e.value) == message
