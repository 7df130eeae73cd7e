"""``recot ask``, ``recot cache`` and ``recot plan`` end to end on a generated video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine_fixtures import tiny_model_and_processor, write_video
from recot.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(root / "model", tokenizer=processor.tokenizer)
    return {"root": root, "model": root / "model", "video": write_video(root / "v.mp4", num_frames=60)}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_json_then_cached(setup, capsys, tmp_path) -> None:
    common = ["--model", setup["model"], "--frames", "20", "--max-new-tokens", "6", "--cache-dir", tmp_path, "--json"]
    code, out, err = _run(capsys, "ask", setup["video"], "What is it?", "Where is it?", *common)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in records] == ["What is it?", "Where is it?"]
    first = records[0]
    assert first["frames"] == 20 and first["groups"] == 5 and first["visual_tokens"] == 45
    assert first["visual_tokens_kept"] == int(45 * 0.85) and first["new_tokens"] == len(first["token_ids"]) <= 6
    assert not first["cache_hit"] and set(first["timings"]) == {"encode", "answer", "total"}
    assert "decode" in err and "encode" in err  # progress bars on stderr

    code, out, err = _run(capsys, "ask", setup["video"], "What is it?", *common, "--keep-ratio", "0.5")
    again = json.loads(out)
    assert code == 0 and again["cache_hit"] and again["visual_tokens_kept"] == 22

    code, out, _ = _run(capsys, "cache", "ls", "--cache-dir", tmp_path, "--json")
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and entry["frames"] == "20" and entry["video"] == str(setup["video"].resolve())
    code, out, _ = _run(capsys, "cache", "ls", "--cache-dir", tmp_path)
    assert "1 entries" in out and entry["key"][:12] in out
    code, out, _ = _run(capsys, "cache", "clear", "--cache-dir", tmp_path)
    assert code == 0 and "removed 1 cached encodings" in out
    assert _run(capsys, "cache", "ls", "--cache-dir", tmp_path, "--json")[1] == ""


def test_ask_jsonl_and_text_output(setup, capsys, tmp_path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"video": "v.mp4", "question": "First?"}) + "\n\n"
                    + json.dumps({"video": str(setup["video"]), "question": "Second?"}) + "\n")  # fmt: skip
    (tmp_path / "v.mp4").write_bytes(setup["video"].read_bytes())
    code, out, err = _run(capsys, "ask", "--jsonl", rows, "--model", setup["model"], "--frames", "8",
                          "--max-new-tokens", "4", "--no-cache", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "Q: First?" in out and "Q: Second?" in out
    assert "8 frames" in err and "encoded in" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ask", "{video}", "  ", "--model", "{model}"], 2, "a question is empty"),
        (["ask", "{video}", "--model", "{model}"], 2, "give a VIDEO and at least one QUESTION"),
        (["ask", "{root}/missing.mp4", "Why?", "--model", "{model}", "--no-cache"], 1, "missing.mp4: no such file"),
        (["ask", "{video}", "Why?", "--model", "{root}/nope", "--no-cache"], 1, "cannot load the model: model directory"),
        (["ask", "{video}", "Why?", "--model", "{model}", "--cache-size", "lots"], 2, "cannot read cache size 'lots'"),
        (["ask", "--jsonl", "{root}/bad.jsonl", "--model", "{model}"], 2, "bad.jsonl, line 2: question: Field required"),
        (["ask", "{video}", "Why?", "--model", "{model}", "--dtype", "fp8"], 2, "unknown dtype 'fp8'"),
        (["ask", "{video}", "Why?", "--model", "{model}", "--device", "cud"], 2, "--device 'cud' is not a device"),
        (["plan", "--frames", "0"], 2, "num_frames must be >= 1"),
        (["plan", "--frames", "8", "--model", "{root}/nope"], 2, "does not exist"),
    ],
)
def test_bad_inputs(setup, capsys, argv, code, message) -> None:
    (setup["root"] / "bad.jsonl").write_text('{"video": "v.mp4", "question": "ok"}\n{"video": "v.mp4"}\n')
    filled = [a.format(video=setup["video"], model=setup["model"], root=setup["root"]) for a in argv]
    got, _, err = _run(capsys, *filled)
    assert got == code
    assert message in err


def test_default_model_is_announced_and_reused(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RECOT_CACHE_DIR", str(tmp_path))
    video = write_video(tmp_path / "v.mp4", num_frames=8)
    code, out, err = _run(capsys, "ask", video, "Hello?", "--frames", "4", "--max-new-tokens", "3", "--json", "--no-progress")
    assert code == 0, err
    assert "UNTRAINED 'small' model" in err and "answers are meaningless" in err
    model_dir = tmp_path / "models" / "untrained-small-seed0"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    built = (model_dir / "model.safetensors").stat().st_mtime_ns
    code, out2, _ = _run(capsys, "ask", video, "Hello?", "--frames", "4", "--max-new-tokens", "3", "--json", "--no-progress")
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == built  # loaded, not rebuilt
    assert json.loads(out2)["token_ids"] == json.loads(out)["token_ids"] and json.loads(out2)["cache_hit"]


def test_plan_command(capsys) -> None:
    code, out, _ = _run(capsys, "plan", "--frames", "8192", "--model", "videoxl-pro-3b", "--device", "cuda", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["dtype"] == "bfloat16" and plan["num_groups"] == 2048
    assert plan["visual_tokens"] == 2048 * 144 and plan["llm_input_tokens"] <= 32768
    assert plan["encode"]["token_store"] == 2048 * 144 * 2048 * 2
    code, out, _ = _run(capsys, "plan", "--frames", "256")
    assert code == 0 and "encode peak:" in out and "answer peak:" in out and "kv_cache" in out


def test_demo_runs_the_main_job_on_the_generated_sample(capsys, tmp_path) -> None:
    argv = ["demo", "--frames", "8", "--max-new-tokens", "2", "--cache-dir", tmp_path, "--json", "--no-progress"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    record = json.loads(out)
    assert record["video"].endswith("samples/sample-1h-160x120-1fps.mp4")
    assert record["question"] == "When does the big red disc appear, and for how long?"
    assert record["frames"] == 8 and record["groups"] == 2 and not record["cache_hit"]
    assert "UNTRAINED" in err and "llava_qwen" not in err  # no transformers warning about the config
    code, out, err = _run(capsys, *argv)
    assert code == 0 and json.loads(out)["cache_hit"] and "writing the sample video" not in err
