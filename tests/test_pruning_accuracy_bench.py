"""benchmarks/pruning_accuracy.py's planted redundancy and its accounting (the training and evaluation it drives are
recot train and benchmarks/default_model.py, tested on their own)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from file_modules import load_file_module
from recot.data.synthetic_qa import check_answer, make_video_spec, render_frames, split_seeds, write_video

ROOT = Path(__file__).resolve().parents[1]
bench = load_file_module(ROOT / "benchmarks" / "pruning_accuracy.py", "pruning_accuracy_bench")


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_a_still_clip_holds_one_quiet_frame_and_its_turns_name_that_scene(tmp_path):
    spec = make_video_spec(split_seeds("train", 1, 5)[0], 1, 1, size=32)
    second = bench.quiet_second(spec, np.random.default_rng(0))
    assert not any(e.visible(np.array([float(second)]))[0] for e in spec.events)
    bench.still_clip(spec, tmp_path / "still.mp4", second, noise=0.0, seed=0)
    frames = frames_of(tmp_path / "still.mp4")
    assert len(frames) == spec.num_frames
    # One frame held: the frames differ by x264's error only, where a moving scene differs by ~100. Measured on six
    # clips of 32 and 64 px: 1.7-3.5 levels on average, at most 10-18 (with x264's macroblock tree on, which the
    # encoder no longer uses, at most 2-6: it spent bits on the blocks later frames keep referring to).
    drift = np.abs(frames.astype(int) - frames[0].astype(int))
    assert drift.mean() <= 4 and drift.max() <= 24
    rendered = render_frames(spec, second, second + 1)[0].astype(int)
    assert np.abs(frames[0].astype(int) - rendered).mean() < 4
    rows = bench.still_rows(spec, second, "stills/x.mp4")
    assert [r["id"] for r in rows] == [f"still-{spec.id}-ground0", f"still-{spec.id}-ground1"]
    scene = spec.scene_at(second)
    for row in rows:
        turns = row["conversations"]
        assert len(turns) == 32 and turns[0]["value"].startswith("<image>\n")
        assert {t["value"] for t in turns[1::2]} == {scene} and set(row["qa"]["types"]) == {"scene"}
        assert check_answer({"qa_type": "scene", "answer": scene}, turns[1]["value"])
    assert bench.kind_of(rows[0]["id"]) == "static"


def test_a_copy_is_the_same_video_at_another_quality_and_size(tmp_path):
    spec = make_video_spec(split_seeds("train", 1, 6)[0], 1, 1, size=64)
    write_video(spec, tmp_path / "v.mp4")
    bench.reencode(tmp_path / "v.mp4", tmp_path / "copy.mp4", size=56)
    original, copy = frames_of(tmp_path / "v.mp4"), frames_of(tmp_path / "copy.mp4")
    assert copy.shape == (len(original), 56, 56, 3)
    bench.reencode(tmp_path / "v.mp4", tmp_path / "same.mp4", size=None)
    same = frames_of(tmp_path / "same.mp4")
    assert same.shape == original.shape and 0 < np.abs(same.astype(int) - original.astype(int)).mean() < 8


def test_detection_counts_a_duplicate_pair_once(tmp_path):
    kept = {"a": True, "a-copy": False,  # the copy dropped: redundancy removed, nothing lost
            "b": False, "b-copy": True,  # the original dropped, its copy kept: also removed, nothing lost
            "c": False, "c-copy": False,  # both dropped: removed, and a useful row lost
            "d": True, "d-copy": True,  # both kept: not removed
            "e": False, "f": True,  # useful rows without a copy
            "still-x-ground0": False, "still-x-ground1": True}  # fmt: skip
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps({"id": k, "kept": v}) + "\n" for k, v in kept.items()))
    assert bench.detection(path) == {"useful": [2, 6], "duplicate": [3, 4], "static": [1, 2]}


def test_pooled_accuracy_leaves_the_rescoring_out():
    table = {"test": {"scene": {"256": [3, 4], "1024": [1, 2]}, "scene:elsewhere": {"256": [1, 2]},
                      "when": {"256": [0, 4]}}, "ood": {"scene": {"256": [0, 9]}}}  # fmt: skip
    assert bench.pooled(table) == (4, 10)


def test_reuse_takes_an_earlier_runs_data_pruning_and_features_for_other_epochs(tmp_path):
    earlier, out = tmp_path / "earlier", tmp_path / "out"
    (earlier / "media" / "videos").mkdir(parents=True)
    (earlier / "media" / "videos" / "v.mp4").write_bytes(b"video")
    (earlier / "eval" / "test256").mkdir(parents=True)
    (earlier / "features").mkdir()
    for name in bench.REUSED[2:]:
        (earlier / name).write_text(name)
    made_with = {"data": "d", "start": "s", "videos": 2, "copies": 1, "stills": 1, "epochs": 2.0, "seed": 0}
    line = f"kept 1 of 2 samples; kept rows in {earlier.resolve()}/pruned.jsonl"
    before = {"made_with": made_with, "counts": {"useful": 1}, "prune_s": 9.5, "prune_line": line, "features": 3,
              "arms": {"full": {"pooled": [1, 2]}}}  # fmt: skip
    (earlier / "state.json").write_text(json.dumps(before))
    out.mkdir()
    state = bench.reuse(earlier, out, {**made_with, "epochs": 4.0})
    assert state["made_with"]["epochs"] == 4.0 and "arms" not in state  # the arms are trained again
    assert (state["counts"], state["prune_s"], state["features"]) == ({"useful": 1}, 9.5, 3)
    assert state["prune_line"] == f"kept 1 of 2 samples; kept rows in {out.resolve()}/pruned.jsonl"
    assert (out / "media" / "videos" / "v.mp4").read_bytes() == b"video" and (out / "eval" / "test256").is_dir()
    assert all((out / name).read_text() == name for name in bench.REUSED[2:])
    assert (out / "features").resolve() == (earlier / "features").resolve()
    with pytest.raises(SystemExit, match="was made with other settings"):
        bench.reuse(earlier, tmp_path / "other", {**made_with, "videos": 3})
    with pytest.raises(SystemExit, match=r"already holds media, eval, full.jsonl, .*features; give an empty --out"):
        bench.reuse(earlier, out, {**made_with, "epochs": 4.0})
    with pytest.raises(SystemExit, match="no state.json there"):
        bench.reuse(tmp_path / "nothing", tmp_path / "other", made_with)
