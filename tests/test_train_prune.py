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
from recot.train.prune import (
    STRONG_REASONS,
    WEAK_REASONS,
    PruneOptions,
    SampleScores,
    question_of,
    same_question,
    select,
    static_threshold,
    temporal_change,
    trigram_jaccard,
    video_embedding,
)
from test_train_fixtures import one_thread  # noqa: F401 (autouse fixture)


def sample(i: int, question: str = "What happens?", answer: str = "x", **extra) -> Sample:
    return Sample("d.json", i + 1, f"s{i}", "v.mp4", "video", None, [(f"<image>\n{question}", answer)], extra)


def unit(v: list[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def emb(look: list[float], move: list[float] | None = None) -> np.ndarray:
    """A (2, K) video embedding: appearance and motion rows."""
    return np.stack([unit(look), unit(move if move is not None else look)])


def scores_of(changes: list[float], text: list[float] | None = None) -> list[SampleScores]:
    text = text or [0.1] * len(changes)
    return [SampleScores(f"k{i}", c, 30.0, t) for i, (c, t) in enumerate(zip(changes, text, strict=True))]


def test_selection_rules():
    samples = [sample(i, question=f"question number {i}?") for i in range(10)]
    samples[1] = sample(1, question="question number 0?")  # same video as 0, same question: duplicate
    samples[2] = sample(2, question="something else entirely")  # same video as 0, other question: kept
    samples[3] = sample(3, question="question number 0?")  # looks like 0, moves otherwise: near-duplicate, kept
    embeddings = {i: emb([1.0, 0.0, 0.0]) for i in range(3)} | {3: emb([1.0, 0.0, 0.0], [0.0, 0.0, 1.0])}
    embeddings |= {i: emb([0.0, 1.0, float(i)]) for i in range(4, 10)}
    changes = [0.5, 0.5, 0.5, 0.5, 0.0001, 0.5, 0.03, 0.4, 0.6, 0.3]  # 4: static; 6: slow (low-motion), kept
    scores = scores_of(changes, [0.1, 0.1, 0.1, 0.1, 0.1, 0.95, 0.1, 0.6, 0.1, 0.1])  # 5: text; 7: text-likely
    sel = select(samples, scores, embeddings, PruneOptions(stratum_floor=0.0))
    d = sel.decisions
    assert [x.kept for x in d] == [True, False, True, True, False, False, True, True, True, True]
    assert d[1].reasons == ["duplicate"] and (d[1].detail["duplicate_of"], d[1].detail["duplicate_of_id"]) == ("d.json:1", "s0")
    assert d[3].reasons == ["near-duplicate"] and (d[3].detail["similar_to"], d[3].detail["similar_to_id"]) == ("d.json:1", "s0")
    assert d[4].reasons == ["static"] and d[5].reasons == ["text-answerable"]
    assert d[6].reasons == ["low-motion"] and d[7].reasons == ["text-likely"]
    assert not any(x.reasons for x in (d[0], d[2], d[8], d[9])) and sel.budget_met and sel.target == 10
    # A budget drops weakly flagged samples only, most redundant first; it never drops an unflagged one.
    tight = select(samples, scores, embeddings, PruneOptions(budget=0.6, stratum_floor=0.0))
    assert [x.kept for x in tight.decisions] == [True, False, True, False, False, False, True, True, True, True]
    assert tight.kept == 6 and tight.budget_met and tight.decisions[3].reasons == ["near-duplicate", "budget"]
    assert [x.kept for x in tight.decisions] == [
        x.kept for x in select(samples, scores, embeddings, PruneOptions(budget=0.6, stratum_floor=0.0)).decisions
    ]
    tighter = select(samples, scores, embeddings, PruneOptions(budget=0.2, stratum_floor=0.0))
    assert tighter.kept == 4 and not tighter.budget_met  # 0, 2, 8, 9: unflagged, so kept whatever the budget
    assert [x.index for x in tighter.decisions if x.kept] == [0, 2, 8, 9]
    # A stratum whose samples are all flagged keeps its floor.
    all_static = scores_of([0.0] * 4 + [1.0] * 8)
    typed = [sample(i, question=f"q{i}", task="counting" if i < 4 else "ocr") for i in range(12)]
    emb2 = {i: emb([1.0, float(i), 2.0 * i]) for i in range(12)}
    floor = select(typed, all_static, emb2, PruneOptions(stratum_floor=0.25)).decisions
    assert [x.kept for x in floor[:4]].count(True) == 1 and all(x.kept for x in floor[4:])


def test_budget_never_drops_unflagged_samples():
    """Property over random data sets and budgets: a dropped sample always carries a flag."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(5, 40))
        samples = [sample(i, question=f"q{int(rng.integers(0, 4))}", task=str(rng.integers(0, 3))) for i in range(n)]
        looks = rng.normal(size=(4, 6))
        embeddings = {i: emb(looks[rng.integers(0, 4)] + rng.normal(scale=0.05, size=6), rng.normal(size=6))
                      for i in range(n)}  # fmt: skip
        scores = scores_of(list(10 ** rng.uniform(-5, 0, n)), list(rng.uniform(0, 1, n)))
        budget = float(rng.uniform(0.1, 1.0))
        sel = select(samples, scores, embeddings, PruneOptions(budget=budget, seed=trial))
        for d in sel.decisions:
            assert d.kept or any(r in STRONG_REASONS + WEAK_REASONS for r in d.reasons), (trial, d)
            assert "budget" not in d.reasons or not any(r in STRONG_REASONS for r in d.reasons)
        flagged_left = [d for d in sel.decisions if d.kept and d.reasons and not d.detail.get("kept_for_balance")]
        assert sel.budget_met or not flagged_left  # the budget stops only when nothing flagged is left
        assert sel.kept == sum(d.kept for d in sel.decisions)
        again = select(samples, scores, embeddings, PruneOptions(budget=budget, seed=trial))
        assert [(d.kept, d.reasons) for d in again.decisions] == [(d.kept, d.reasons) for d in sel.decisions]


def test_budget_balances_strata():
    samples = [sample(i, question=f"q{i}", task="a" if i < 6 else "b") for i in range(8)]
    scores = [SampleScores(f"k{i}", 0.5, 10.0, 0.6) for i in range(8)]  # all text-likely: candidates
    embeddings = {i: emb([1.0, float(i), 0.0]) for i in range(8)}
    decisions = select(samples, scores, embeddings, PruneOptions(budget=0.5)).decisions
    kept = [d.stratum.split(" |")[0] for d in decisions if d.kept]
    assert sorted(kept) == ["a", "a", "b", "b"]  # taken from the larger task first, down to parity


def test_static_threshold_finds_the_break_between_noise_and_motion():
    # Still clips (noise, 1e-5..1e-4), slow motion (5e-3..3e-2), ordinary motion (0.1..1).
    still, slow, moving = [1e-5, 3e-5, 1e-4], [5e-3, 1e-2, 3e-2], [0.1, 0.2, 0.3, 0.5, 0.8, 1.0]
    t = static_threshold(still + slow + moving, ratio=0.1, gap=5.0)
    assert 1e-4 < t < 5e-3  # the break between noise and the slowest motion, not the median's tenth (0.02)
    # No break (a continuum of motion): nothing is static.
    assert static_threshold(list(np.geomspace(1e-3, 1.0, 30)), ratio=0.1, gap=5.0) == 0.0
    # Exactly still videos (span 0) still form a group below the first moving one.
    assert 0.0 < static_threshold([0.0, 0.0] + moving, ratio=0.1, gap=5.0) <= 0.1 * float(np.median([0.0] * 2 + moving)) + 1e-12
    assert static_threshold([], 0.1, 5.0) == 0.0 and static_threshold([0.5, 0.5], 0.1, 5.0) == 0.0
    # Stills at three levels (bit-exact 0, a codec's rounding, camera noise) under the moving clips: all static. The
    # ratio 0 -> 5e-6 is rounding against rounding; it made the widest gap before the floor and left the noisy
    # stills on the moving side (as measured on benchmarks/pruning_accuracy.py's stills: 4 of 300 found).
    noisy = [5e-3, 6e-3, 7e-3]
    t = static_threshold([0.0, 5e-6, 4e-8, *noisy, 0.9, 1.0, 1.1, 1.2, 1.0, 0.95], ratio=0.1, gap=5.0)
    assert 7e-3 < t < 0.09
    assert static_threshold([0.0, *np.geomspace(1e-3, 1.0, 30)], ratio=0.1, gap=5.0) > 0.0  # the 0 alone


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
    # Noise does not add up over time, drift does: same step between neighbours, different span.
    base = torch.tensor(rng.normal(size=(1, 4, 32))).repeat(16, 1, 1)
    noise = base + 0.01 * torch.tensor(rng.normal(size=(16, 4, 32)))  # neighbours differ by ~0.014 per channel
    direction = torch.tensor(rng.normal(size=(1, 4, 32)))
    drift = base + 0.014 * torch.arange(16.0)[:, None, None] * direction  # neighbours differ by ~0.014 too
    neighbours = [float((1 - torch.cosine_similarity(v[1:], v[:-1], dim=2)).amax()) for v in (noise, drift)]
    assert neighbours[1] < 2 * neighbours[0]
    assert temporal_change(drift) > 20 * temporal_change(noise)
    e = video_embedding(moving)
    assert e.shape == (2, 8 * 9 * 16) and np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert float(video_embedding(moving * 1.01 + 1e-4)[0] @ e[0]) > 0.999
    assert float(video_embedding(moving * 1.01 + 1e-4)[1] @ e[1]) > 0.99
    # Same look, other motion: the appearance rows agree, the motion rows do not.
    scene = torch.tensor(rng.normal(size=(1, 9, 16))).repeat(8, 1, 1)
    a = scene + 0.2 * torch.tensor(rng.normal(size=(8, 9, 16)))
    b = scene + 0.2 * torch.tensor(rng.normal(size=(8, 9, 16)))
    ea, eb = video_embedding(a), video_embedding(b)
    assert float(ea[0] @ eb[0]) > 0.9 and abs(float(ea[1] @ eb[1])) < 0.3
    # Wide tokens are reduced (pooled positions, projected channels) deterministically.
    wide = torch.tensor(rng.normal(size=(6, 40, 300)))
    w = video_embedding(wide)
    assert w.shape == (2, 8 * 16 * 64) and np.array_equal(w, video_embedding(wide.clone()))
    assert trigram_jaccard("what colour is it", "what colour is it") == 1.0
    assert trigram_jaccard("what colour is it", "how many dogs run") < 0.2


def test_questions_that_differ_in_a_number_are_different_questions():
    # One video, one template at two times: most trigrams shared, but two moments asked about (the default model's
    # grounding conversations have 16 such turns; 509 of its 4,000 rows were taken for duplicates before).
    a, b = "which scene is shown at 01:56?", "which scene is shown at 01:57?"
    assert trigram_jaccard(a, b) >= 0.8
    assert not same_question(a, b, 0.8)
    assert same_question(a, "which scene is shown at 01:56 ?", 0.8)  # a respelling of the same question
    assert not same_question("how many times does the red circle appear?", "what is the capital of france?", 0.8)
    samples = [sample(0, question=a), sample(1, question=b), sample(2, question=a)]
    embeddings = {i: emb([1.0, 0.0, 0.0]) for i in range(3)}  # one video
    d = select(samples, scores_of([0.5] * 3), embeddings, PruneOptions(stratum_floor=0.0)).decisions
    assert [x.reasons for x in d] == [[], [], ["duplicate"]] and d[2].detail["duplicate_of"] == "d.json:1"
    # A conversation that opens like another and then asks other things is another lesson; the same turns are not.
    talk = Sample("d.json", 4, "s3", "v.mp4", "video", None, [(f"<image>\n{a}", "x"), ("what is on screen at 00:10?", "y")], {})
    again = Sample("d.json", 5, "s4", "v.mp4", "video", None, [(f"<image>\n{a}", "x"), ("what is on screen at 00:10?", "z")], {})
    assert question_of(talk) == f"{a} | what is on screen at 00:10?"
    d = select([samples[0], talk, again], scores_of([0.5] * 3), embeddings, PruneOptions(stratum_floor=0.0)).decisions
    assert [x.reasons for x in d] == [[], [], ["duplicate"]] and d[2].detail["duplicate_of"] == "d.json:4"


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
    assert by_id["dup"]["detail"]["duplicate_of_id"] == "a"
    assert by_id["still"]["reasons"] == ["static"] and by_id["still"]["detail"]["temporal_change"] == 0.0
    report = (tmp_path / "report.md").read_text()
    assert "Kept **3 of 5**" in report and "| duplicate | strong | 1 | 1 |" in report and f"{data}:6: video" in report
    first = [(tmp_path / n).read_bytes() for n in ("kept.json", "kept.decisions.jsonl", "report.md")]
    scores_file = tmp_path / "kept.scores.jsonl"
    assert len(scores_file.read_text().splitlines()) == 4  # "a" and "dup": same bytes, same conversation, one score
    # A rerun reads every score from the cache (no text pass), and decides the same.
    monkeypatch.setattr(prune, "text_only_probability", lambda *a: pytest.fail("recomputed a cached score"))
    assert main(args) == 0
    assert [(tmp_path / n).read_bytes() for n in ("kept.json", "kept.decisions.jsonl", "report.md")] == first
    assert len(scores_file.read_text().splitlines()) == 4
    # A budget below what the flags allow keeps the unflagged samples and says the budget is not met.
    capsys.readouterr()
    assert main([*args, "--budget", "0.2"]) == 0
    assert "budget 0.2 not met" in capsys.readouterr().out
    assert [r["id"] for r in json.loads((tmp_path / "kept.json").read_text())] == ["a", "b", "c"]
    assert "**not met**" in (tmp_path / "report.md").read_text()
    assert main([*args[:1], str(tmp_path / "nope.json"), *args[2:]]) == 2
    assert main([*args, "--budget", "1.5"]) == 2
    assert main([*args, "--strict"]) == 1
    assert f"{data}:6: video" in capsys.readouterr().err


def test_the_text_only_score_is_the_whole_answers_probability_token_by_token():
    """The text pass scores the reference answer as a whole: the product of each answer token's probability given
    the prompt and the answer so far (its closing <|im_end|> included), here computed one token at a time with the
    generation prompt. A mean per token would score a multi-token answer far higher (0.3 then near-certain: 0.82)."""
    import torch

    model, processor = tiny_model_and_processor()
    model.eval()
    question, answer = "What colour is the ring?", "orange"
    probability = prune.text_only_probability(model, processor, sample(0, question, answer))
    ids = processor.tokenize_prompt(question, with_video=False).tolist()
    targets = processor.tokenizer(answer, add_special_tokens=False).input_ids + [processor.stop_token_ids[0]]
    expected = 1.0
    with torch.no_grad():
        for target in targets:
            logits = model.language_model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            expected *= float(torch.softmax(logits, -1)[target])
            ids.append(target)
    assert len(targets) == 7 and 0 < expected < 1
    assert probability == pytest.approx(expected, rel=1e-4)
