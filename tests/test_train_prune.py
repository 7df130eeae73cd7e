"""Video-specific dataset pruning: the selection rules, determinism, the resumable score cache, the command."""

import json
import shutil

import av
import numpy as np
import pytest

from engine_fixtures import tiny_model_and_processor, write_video
from recot.cli import main
from recot.train import prune
from recot.train.data import Sample
from recot.train.prune import PruneOptions, SampleScores, select, temporal_change, trigram_jaccard, video_embedding
from test_train_fixtures import one_thread  # noqa: F401 (autouse fixture)


def sample(i: int, question: str = "What happens?", answer: str = "x", **extra) -> Sample:
    return Sample("d.json", i + 1, f"s{i}", "v.mp4", "video", None, [(f"<image>\n{question}", answer)], extra)


def unit(v: list[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def test_selection_rules():
    samples = [sample(i, question=f"question number {i}?") for i in range(8)]
    samples[1] = sample(1, question="question number 0?")  # same video as 0, same question: duplicate
    samples[2] = sample(2, question="something else entirely")  # same video as 0, other question: kept
    emb = {i: unit([1.0, 0.0, 0.0]) for i in range(3)} | {i: unit([0.0, 1.0, float(i)]) for i in range(3, 8)}
    scores = [SampleScores(f"k{i}", 0.5, 30.0, 0.1) for i in range(8)]
    scores[4] = SampleScores("k4", 0.001, 30.0, 0.1)  # static
    scores[5] = SampleScores("k5", 0.5, 30.0, 0.95)  # text-answerable
    decisions = select(samples, scores, emb, PruneOptions(stratum_floor=0.0))
    assert [d.kept for d in decisions] == [True, False, True, True, False, False, True, True]
    assert decisions[1].reasons == ["duplicate"] and decisions[1].detail["duplicate_of"] == "d.json:1"
    assert decisions[4].reasons == ["static"] and decisions[5].reasons == ["text-answerable"]
    # A budget drops more, most redundant first; the result is deterministic.
    tight = select(samples, scores, emb, PruneOptions(budget=0.5, stratum_floor=0.0))
    assert sum(d.kept for d in tight) == 4 and all(not d.kept for d in tight if d.reasons and d.reasons[0] != "budget")
    assert [d.kept for d in tight] == [
        d.kept for d in select(samples, scores, emb, PruneOptions(budget=0.5, stratum_floor=0.0))
    ]
    # A stratum whose samples are all flagged keeps its floor.
    all_static = [SampleScores(f"k{i}", 0.0 if i < 4 else 1.0, 30.0, 0.1) for i in range(8)]
    typed = [sample(i, question=f"q{i}", task="counting" if i < 4 else "ocr") for i in range(8)]
    emb2 = {i: unit([1.0, float(i), 2.0 * i]) for i in range(8)}
    floor = select(typed, all_static, emb2, PruneOptions(stratum_floor=0.25))
    assert [d.kept for d in floor[:4]].count(True) == 1 and all(d.kept for d in floor[4:])


def test_budget_balances_strata():
    samples = [sample(i, question=f"q{i}", task="a" if i < 6 else "b") for i in range(8)]
    scores = [SampleScores(f"k{i}", 0.5, 10.0, 0.0) for i in range(8)]
    emb = {i: unit([1.0, float(i), 0.0]) for i in range(8)}
    decisions = select(samples, scores, emb, PruneOptions(budget=0.5))
    kept = [d.stratum.split(" |")[0] for d in decisions if d.kept]
    assert sorted(kept) == ["a", "a", "b", "b"]  # taken from the larger task first, down to parity


def test_signals():
    rng = np.random.default_rng(0)
    import torch

    moving = torch.tensor(rng.normal(size=(5, 9, 16)))
    static = moving[:1].repeat(5, 1, 1)
    assert temporal_change(static) == pytest.approx(0.0, abs=1e-6) and temporal_change(moving) > 0.5
    # One token of 9 changes (a small object moving in a still scene): the change is that token's, not 1/9 of it.
    local = static.clone()
    local[1::2, 4] = -local[1::2, 4]
    assert temporal_change(local) == pytest.approx(2.0, rel=1e-5)
    e = video_embedding(moving)
    assert e.shape == (8 * 16,) and np.linalg.norm(e) == pytest.approx(1.0)
    assert float(video_embedding(moving * 1.01 + 1e-4) @ e) > 0.999
    assert trigram_jaccard("what colour is it", "what colour is it") == 1.0
    assert trigram_jaccard("what colour is it", "how many dogs run") < 0.2


def write_static_video(path, colour=(90, 120, 30), num_frames=8):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        frame = np.zeros((24, 32, 3), np.uint8) + np.array(colour, np.uint8)
        for _ in range(num_frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def test_prune_command_is_deterministic_and_resumes_from_the_score_cache(tmp_path, monkeypatch, capsys):
    model, processor = tiny_model_and_processor()
    model.save_pretrained(tmp_path / "model", tokenizer=processor.tokenizer)
    media = tmp_path / "media"
    media.mkdir()
    for i in range(3):
        write_video(media / f"v{i}.mp4", num_frames=16, size=(32, 24), fps=8, seed=i)
    shutil.copy(media / "v0.mp4", media / "copy.mp4")
    write_static_video(media / "still.mp4")
    def conv(q, a):
        return [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]
    rows = [
        {"id": "a", "video": "v0.mp4", "conversations": conv("What moves?", "a bar")},
        {"id": "b", "video": "v1.mp4", "conversations": conv("What moves?", "a ball")},
        {"id": "c", "video": "v2.mp4", "conversations": conv("How many?", "three")},
        {"id": "dup", "video": "copy.mp4", "conversations": conv("What moves?", "a bar")},
        {"id": "still", "video": "still.mp4", "conversations": conv("What colour?", "green")},
        {"id": "bad", "video": "missing.mp4", "conversations": conv("Q", "A")},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["prune-data", str(data), "--out", str(tmp_path / "kept.json"), "--report", str(tmp_path / "report.md"),
            "--model", str(tmp_path / "model"), "--cache-dir", str(tmp_path / "cache"), "--fps", "8", "--no-progress",
            "--media-root", str(media)]  # fmt: skip
    assert main(args) == 0
    kept = json.loads((tmp_path / "kept.json").read_text())
    assert [r["id"] for r in kept] == ["a", "b", "c"]
    decisions = [json.loads(line) for line in (tmp_path / "kept.decisions.jsonl").read_text().splitlines()]
    by_id = {d["id"]: d for d in decisions}
    assert by_id["dup"]["reasons"] == ["duplicate"] and by_id["dup"]["detail"]["duplicate_of"] == f"{data}:1"
    assert by_id["still"]["reasons"] == ["static"] and by_id["still"]["detail"]["temporal_change"] == 0.0
    report = (tmp_path / "report.md").read_text()
    assert "Kept **3 of 5**" in report and "| duplicate | 1 | 1 |" in report and f"{data}:6: video" in report
    first = [(tmp_path / n).read_bytes() for n in ("kept.json", "kept.decisions.jsonl", "report.md")]
    scores_file = tmp_path / "kept.scores.jsonl"
    assert len(scores_file.read_text().splitlines()) == 4  # "a" and "dup": same bytes, same conversation, one score
    # A rerun reads every score from the cache (no text pass), and decides the same.
    monkeypatch.setattr(prune, "text_only_probability", lambda *a: pytest.fail("recomputed a cached score"))
    assert main(args) == 0
    assert [(tmp_path / n).read_bytes() for n in ("kept.json", "kept.decisions.jsonl", "report.md")] == first
    assert len(scores_file.read_text().splitlines()) == 4
    capsys.readouterr()
    assert main([*args[:1], str(tmp_path / "nope.json"), *args[2:]]) == 2
    assert main([*args, "--budget", "1.5"]) == 2
    assert main([*args, "--strict"]) == 1
    assert f"{data}:6: video" in capsys.readouterr().err
