"""``recot eval`` end to end with the tiny model: outputs, reproducibility record, resume, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine_fixtures import tiny_model_and_processor, write_video
from eval_fixtures import write_json
from recot import __version__
from recot.cli import main
from recot.data.sample_video import write_sample_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalcli")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(root / "model", tokenizer=processor.tokenizer)
    rows = []
    (root / "data").mkdir()
    for v in range(2):
        write_video(root / "data" / f"plot_{v}.mp4", seed=v)
        for q in range(2):
            rows.append({"video_name": f"plot_{v}.mp4", "question": f"Scene {v}-{q}?\n(A) day\n(B) night",
                         "answer": "AB"[q], "task_type": "plotQA", "question_id": f"P{v}{q}"})  # fmt: skip
    write_json(root / "data" / "mlvu_dev.json", rows)
    (root / "empty").mkdir()
    # A 40-second haystack without the sample video's red disc.
    write_sample_video(root / "hay.mp4", duration=40, needle_at=1000, progress=False)
    return {"root": root, "model": root / "model", "data": root / "data", "haystack": root / "hay.mp4"}


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_mlvu_run_records_everything_and_resumes(setup, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "mlvu-dev", "--data", setup["data"], "--model", setup["model"], "--frames", "8",
            "--max-new-tokens", "4", "--cache-dir", tmp_path / "cache", "--no-progress"]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    [run_dir] = list((tmp_path / "recot-eval").iterdir())  # default folder: task + settings hash
    assert run_dir.name.startswith("mlvu-dev-")
    assert "MLVU dev (multiple choice):" in out and "4 of 4 questions answered, 0 skipped" in out
    results = json.loads((run_dir / "results.json").read_text())
    config = results["config"]
    data_file = setup["data"] / "mlvu_dev.json"
    assert config["data"]["files"] == {"mlvu_dev.json": hashlib.sha256(data_file.read_bytes()).hexdigest()}
    assert config["model"]["path"] == str(setup["model"].resolve()) and len(config["model"]["id"]) == 64
    assert config["model"]["preset"] == "tiny" and config["model"]["dtype"] == "float32"
    assert config["recot_version"] == __version__
    assert config["sampling"] == {"num_frames": 8, "fps": None, "max_frames": None, "start": None, "end": None}
    assert (config["keep_ratio"], config["max_visual_tokens"], config["max_new_tokens"]) == (0.85, None, 4)
    assert (config["extractor"], config["seed"], config["limit"]) == ("legacy", 0, None)
    # MLVU keeps the model's own system prompt (recorded resolved) and has no prefill.
    assert (config["system_prompt"], config["answer_prefix"]) == ("You are a helpful assistant.", "")
    assert json.loads((run_dir / "run.json").read_text()) == config
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["P00", "P01", "P10", "P11"]
    assert set(json.loads(lines[0])) >= {"id", "question", "options", "output", "extracted", "correct", "frames",
                                          "visual_tokens_kept", "timings", "prompt"}  # fmt: skip
    summary = (run_dir / "summary.md").read_text()
    assert summary.startswith("# MLVU dev (multiple choice)") and "| plotQA | " in summary
    first = (run_dir / "results.json").read_bytes()

    code, out, err = _run(capsys, *argv)  # the same command resumes: nothing left to answer
    assert code == 0 and "this run: 0 questions answered" in (run_dir / "summary.md").read_text()
    assert (run_dir / "results.json").read_bytes() == first

    code, out, err = _run(capsys, *argv, "--extractor", "current", "--limit", "2")
    assert code == 0 and "2 of 2 questions answered" in out
    assert len(list((tmp_path / "recot-eval").iterdir())) == 2  # other settings, another folder


@pytest.mark.slow  # ~5-15 s: builds haystack clips and cells, draws the heatmap
def test_vniah_small_grid_writes_heatmap(setup, capsys, tmp_path) -> None:
    argv = ["eval", "vniah", "--model", setup["model"], "--haystack", setup["haystack"], "--grid-frames", "4,8",
            "--depths", "50", "--needle-seconds", "2", "--max-new-tokens", "4", "--limit", "4",
            "--output", tmp_path / "niah",
            "--cache-dir", tmp_path / "cache", "--no-progress"]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    results = json.loads((tmp_path / "niah" / "results.json").read_text())
    # --limit 4: the 2 lengths x 1 depth of the first two synthetic needles.
    assert results["counts"]["answered"] == 4 and results["scores"]["per_cell"]["frames8-depth50"]["total"] == 2
    assert results["scores"]["grid"]["frames"] == [4, 8] and results["scores"]["grid"]["depths_percent"] == [50.0]
    assert results["config"]["sampling"]["max_frames"] == 10  # every frame of the longest cell (8 + 2)
    assert results["config"]["task_settings"]["frame_size"] == 98  # the tiny preset's input size
    assert results["config"]["answer_prefix"] == "Best option:("
    assert (tmp_path / "niah" / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "heatmap.png" in out


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["mlvu-dev"], 2, "mlvu-dev needs --data"),
        (["mlvu-dev", "--data", "/no/such/dir"], 2, "--data /no/such/dir does not exist"),
        (["mlvu-dev", "--data", "{data}", "--frames", "0"], 2, "--frames must be >= 1, got 0"),
        (["mlvu-dev", "--data", "{data}", "--fps", "-1"], 2, "--fps must be > 0"),
        (["mlvu-dev", "--data", "{data}", "--keep-ratio", "1.5"], 2, "--keep-ratio must be in (0, 1]"),
        (["mlvu-dev", "--data", "{data}", "--grid-frames", "4"], 2, "--grid-frames only apply to the vniah task"),
        (["vniah", "--frames", "8"], 2, "--frames do not apply to vniah"),
        (["vniah", "--grid-frames", "a,b"], 2, "--grid-frames must be comma-separated numbers"),
        (["vniah", "--depths", "150"], 2, "--depths must be percentages in [0, 100]"),
        (["vniah", "--haystack", "/no/hay.mp4"], 2, "--haystack /no/hay.mp4 does not exist"),
        (["vniah", "--videos", "{root}"], 2, "--videos does not apply to vniah"),
        (["mlvu-dev", "--data", "{data}", "--dtype", "int3"], 2, "int3"),
        (["mlvu-dev", "--data", "{data}", "--model", "/no/model"], 1, "cannot load the model (--model)"),
        (["mlvu-dev", "--data", "{root}/empty"], 1, "no annotation file under"),
        (
            ["vniah", "--haystack", "{haystack}", "--grid-frames", "100"],
            1,
            "has 40 frames; --grid-frames asks for up to 100",
        ),
        (["videomme", "--data", "{data}/mlvu_dev.json"], 1, "no usable question"),
    ],
)
def test_errors_are_one_line_with_exit_codes(setup, capsys, tmp_path, args, code, message) -> None:
    fill = {"data": setup["data"], "root": setup["root"], "haystack": setup["haystack"]}
    argv = ["eval", *(a.format(**fill) for a in args), "--cache-dir", tmp_path / "cache", "--no-progress"]
    if "--model" not in args:
        argv += ["--model", setup["model"]]
    got, out, err = _run(capsys, *argv)
    assert got == code, err
    assert err.startswith("recot eval: error: ") and message in err
    assert err.count("\n") == 1  # one line, no traceback


def test_run_folder_with_other_settings_exit_2(setup, capsys, tmp_path) -> None:
    def argv(frames: int) -> list:
        return ["eval", "mlvu-dev", "--data", setup["data"], "--model", setup["model"], "--frames", frames,
                "--limit", "1", "--max-new-tokens", "2", "--output", tmp_path / "run",
                "--cache-dir", tmp_path / "cache",
                "--no-progress"]  # fmt: skip

    assert _run(capsys, *argv(4))[0] == 0
    code, _, err = _run(capsys, *argv(5))
    assert code == 2 and "holds a run with other settings (sampling differ)" in err and err.count("\n") == 1


def test_unknown_task_is_a_usage_error(capsys) -> None:
    assert main(["eval", "mmlu"]) == 2
    assert "invalid choice: 'mmlu'" in capsys.readouterr().err


def test_max_visual_tokens_reads_like_ask(capsys) -> None:
    # The same argparse type as `recot ask`: an integer >= 1 or "all"; 0 is a usage error (exit 2).
    code, _, err = _run(capsys, "eval", "mlvu-dev", "--max-visual-tokens", "0")
    assert code == 2
    assert err.splitlines()[-1] == "recot eval: error: argument --max-visual-tokens: expected an integer >= 1 or 'all', got '0'"
