"""``recot ask``, ``recot cache`` and ``recot plan`` end to end on a generated video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine_fixtures import tiny_model_and_processor, write_video
from recot.cli import main
from recot.engine import FrameSampling, GenerationOptions, VideoChat
from recot.engine.default_model import ModelSpecError, resolve_model, shipped_default_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(root / "model", tokenizer=processor.tokenizer)
    (root / "empty-dir").mkdir()
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text("{not json")
    (root / "weights.safetensors").write_bytes(b"x")
    return {"root": root, "model": root / "model", "video": write_video(root / "v.mp4", num_frames=60)}


def _run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
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
    assert "decode" in err and "encode" in err  # progress bars on stderr...
    assert "\x1b[" not in err  # ...without terminal cursor movements, as stderr is not a terminal here

    code, out, err = _run(capsys, "ask", setup["video"], "What is it?", *common, "--keep-ratio", "0.5")
    again = json.loads(out)
    assert code == 0 and again["cache_hit"] and again["visual_tokens_kept"] == 22

    code, out, _ = _run(capsys, "cache", "ls", "--cache-dir", tmp_path, "--json")
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and entry["frames"] == 20 and entry["video"] == str(setup["video"].resolve())
    assert isinstance(entry["created"], float) and isinstance(entry["last_used"], float)
    assert entry["created"] <= entry["last_used"] and isinstance(entry["size"], int)
    assert sorted(entry) == ["created", "frames", "key", "last_used", "model_id", "path", "rule", "size", "video"]
    assert list(tmp_path.rglob("*.lock")) == []  # locks exist only while held
    code, out, _ = _run(capsys, "cache", "ls", "--cache-dir", tmp_path)
    assert "1 entries" in out and entry["key"][:12] in out and "    20 frames" in out
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


def test_jsonl_batch_answers_good_rows_and_reports_bad_ones(setup, capsys, tmp_path) -> None:
    (tmp_path / "v.mp4").write_bytes(setup["video"].read_bytes())
    write_video(tmp_path / "w.mp4", num_frames=12, seed=3)
    lines = [
        json.dumps({"video": "v.mp4", "question": "First?"}),  # 1: good
        json.dumps({"video": "missing.mp4", "question": "Where?"}),  # 2: no such video
        "not json",  # 3
        json.dumps({"video": "v.mp4"}),  # 4: no question
        "",  # 5: blank, skipped
        json.dumps({"video": "v.mp4", "question": "  "}),  # 6: empty question
        json.dumps({"video": "v.mp4", "question": "Why?", "extra": 1}),  # 7: unknown field
        json.dumps({"video": "w.mp4", "question": "Third?"}),  # 8: good, another video
    ]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(lines) + "\n")
    common = ["--model", setup["model"], "--frames", "8", "--max-new-tokens", "3", "--no-cache", "--no-progress"]
    code, out, err = _run(capsys, "ask", "--jsonl", rows, *common, "--json")
    assert code == 1
    records = {r["line"]: r for r in map(json.loads, out.splitlines())}
    assert sorted(records) == [1, 2, 3, 4, 6, 7, 8]
    assert records[1]["question"] == "First?" and records[1]["frames"] == 8 and records[1]["token_ids"]
    assert records[8]["question"] == "Third?" and records[8]["video"] == str(tmp_path / "w.mp4")
    v = str(tmp_path / "v.mp4")
    assert records[2] == {"line": 2, "video": str(tmp_path / "missing.mp4"), "error": f"{tmp_path / 'missing.mp4'}: no such file or directory"}
    assert records[3]["video"] is None and records[3]["error"].startswith("row: Invalid JSON")
    assert records[4] == {"line": 4, "video": v, "error": "question: Field required"}
    assert records[6] == {"line": 6, "video": v, "error": "the question is empty"}
    assert records[7] == {"line": 7, "video": v, "error": "extra: Extra inputs are not permitted"}
    assert err.splitlines()[-1] == "recot ask: error: 5 of 7 rows failed (lines 2, 3, 4, 6, 7); 2 answered"

    code, out, err = _run(capsys, "ask", "--jsonl", rows, *common)  # text: answers on stdout, errors on stderr
    assert code == 1 and "Q: First?" in out and "Q: Third?" in out
    assert f"recot ask: error: {rows}, line 2: {tmp_path / 'missing.mp4'}: no such file or directory" in err.splitlines()
    assert f"recot ask: error: {rows}, line 6: the question is empty" in err.splitlines()


# Flag errors are found before the model is looked at: --model points nowhere, yet the exit code is 2.
NOWHERE = ["--model", "{root}/nope"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-frames", "0"], "argument --max-frames: must be >= 1, got 0"),
        (["--max-visual-tokens", "0"], "argument --max-visual-tokens: expected an integer >= 1 or 'all', got '0'"),
        (["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
        (["--frames", "0"], "argument --frames: must be >= 1, got 0"),
        (["--frames", "ten"], "argument --frames: expected an integer, got 'ten'"),
        (["--fps", "0"], "argument --fps: must be > 0, got 0.0"),
        (["--keep-ratio", "0"], "argument --keep-ratio: must be in (0, 1], got 0.0"),
        (["--keep-ratio", "1.5"], "argument --keep-ratio: must be in (0, 1], got 1.5"),
        (["--do-sample", "--temperature", "0"], "argument --temperature: must be > 0, got 0.0"),
        (["--top-p", "0"], "argument --top-p: must be in (0, 1], got 0.0"),
        (["--start", "-1"], "argument --start: must be >= 0.0, got -1.0"),
        (["--frames", "4", "--fps", "1"], "argument --fps: not allowed with argument --frames"),
        (["--start", "5", "--end", "2"], "--end must be after --start, got --start 5 --end 2"),
        (["--cache-size", "lots"], "argument --cache-size: cannot read cache size 'lots'; use e.g. 20GB, 512MB or a number of bytes"),
        (["--dtype", "fp8"], "--dtype: unknown dtype 'fp8'; use one of float32, fp32, float, bfloat16, bf16, float16, fp16, half"),
        (["--device", "cud"], "--device 'cud' is not a device torch knows (use cpu, cuda, cuda:1, mps, ...)"),
    ],
)
def test_flag_errors_name_the_flag_and_exit_2(setup, capsys, argv, message) -> None:
    filled = [a.format(root=setup["root"]) for a in NOWHERE]
    code, _, err = _run(capsys, "ask", setup["video"], "Why?", *filled, *argv)
    assert code == 2
    assert err.splitlines()[-1] == f"recot ask: error: {message}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "{video}", "  "], "a QUESTION is empty"),
        (["ask", "{video}"], "give a VIDEO and at least one QUESTION (or --jsonl FILE)"),
        (["ask", "{video}", "Why?", "--jsonl", "{root}/rows.jsonl"], "give either VIDEO QUESTION... or --jsonl FILE, not both"),
        (["plan", "--frames", "0"], "argument --frames: must be >= 1, got 0"),
        (["plan", "--frames", "8", "--keep-ratio", "2"], "argument --keep-ratio: must be in (0, 1], got 2.0"),
        (["plan", "--frames", "8", "--dtype", "int8"], "--dtype: unknown dtype 'int8'; use one of float32, fp32, float, bfloat16, bf16, float16, fp16, half"),
    ],
)
def test_usage_errors_exit_2(setup, capsys, argv, message) -> None:
    filled = [a.format(video=setup["video"], root=setup["root"]) for a in argv]
    code, _, err = _run(capsys, *filled, *NOWHERE[:1], NOWHERE[1].format(root=setup["root"]))
    assert code == 2
    assert err.splitlines()[-1] == f"recot {argv[0]}: error: {message}"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{root}/nope", "model directory {root}/nope does not exist"),
        ("{root}/weights.safetensors", "{root}/weights.safetensors is a file, not a model: give the checkpoint directory "
                                       "that holds config.json and the safetensors weights"),
        ("bogus", "'bogus' is neither a checkpoint directory nor a model name; names: default, lite, lite48, small, tiny, "
                  "videoxl-pro-3b"),
        ("{root}/empty-dir", "{root}/empty-dir is not a checkpoint directory: it has no config.json (found: nothing)"),
        ("videoxl-pro-3b", "preset 'videoxl-pro-3b' has sizes but no weights (only small, tiny, lite, lite48 can be built "
                           "untrained); "
                           "pass the checkpoint directory of a trained model"),
    ],
)
def test_bad_models_exit_1_with_what_was_wrong(setup, capsys, model, message) -> None:
    model, message = model.format(root=setup["root"]), message.format(root=setup["root"])
    code, _, err = _run(capsys, "ask", setup["video"], "Why?", "--model", model, "--no-cache")
    assert (code, err) == (1, f"recot ask: error: cannot load the model: {message}\n")
    if model != "videoxl-pro-3b":
        code, _, err = _run(capsys, "plan", "--frames", "8", "--model", model)
        assert (code, err) == (1, f"recot plan: error: cannot read the model: {message}\n")


def test_plan_counts_clocks_as_long_as_the_last_frames(capsys) -> None:
    """The default model writes a group's time as a clock: 5 byte tokens below an hour ("59:56"), 7 from there
    ("1:00:00"). The plan counts every group's text as long as the last frame's at 1 fps (an upper bound): 899
    texts of 5 for 3,596 frames, 900 of 7 for 3,600."""
    inputs = []
    for frames in (3596, 3600):
        code, out, _ = _run(capsys, "plan", "--frames", str(frames), "--max-visual-tokens", "all", "--json")
        assert code == 0
        inputs.append(json.loads(out)["llm_input_tokens"])
    assert inputs[1] - inputs[0] == 4 + 900 * 7 - 899 * 5


def test_plan_counts_the_released_time_texts_digit_by_digit(capsys) -> None:
    """The released model writes ``Time 9996.0s:`` (10 Qwen2.5 tokens: one per digit) and ``Time 10000.0s:`` (11).
    With every visual token kept, 10,000 frames need one more group than 9,996 and a token more in every text."""
    inputs = []
    for frames in (9996, 10000):
        argv = ["--frames", str(frames), "--model", "videoxl-pro-3b", "--max-visual-tokens", "all", "--keep-ratio", "1"]
        code, out, _ = _run(capsys, "plan", *argv, "--json")
        assert code == 0
        inputs.append(json.loads(out)["llm_input_tokens"])
    assert inputs[1] - inputs[0] == 144 + 2500 * 11 - 2499 * 10


def test_broken_config_is_named_once(setup, capsys) -> None:
    code, _, err = _run(capsys, "ask", setup["video"], "Why?", "--model", setup["root"] / "bad-config", "--no-cache")
    config = setup["root"] / "bad-config" / "config.json"
    assert code == 1 and err.startswith(f"recot ask: error: cannot load the model: cannot read model config {config}: ")
    assert err.count(str(config)) == 1 and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{root}/missing.mp4", "Why?"], "{root}/missing.mp4: no such file or directory"),
        (["--jsonl", "{root}/none.jsonl"], "--jsonl: cannot read {root}/none.jsonl: No such file or directory"),
        (["--jsonl", "{root}/blank.jsonl"], "--jsonl: {root}/blank.jsonl has no rows"),
    ],
)
def test_bad_inputs_exit_1(setup, capsys, argv, message) -> None:
    (setup["root"] / "blank.jsonl").write_text("\n\n")
    filled = [a.format(root=setup["root"]) for a in argv]
    code, _, err = _run(capsys, "ask", *filled, "--model", setup["model"], "--no-cache", "--no-progress")
    assert (code, err) == (1, f"recot ask: error: {message.format(root=setup['root'])}\n")


def test_device_errors_exit_2_without_traceback(setup, capsys, monkeypatch) -> None:
    argv = ["ask", setup["video"], "Why?", "--model", setup["root"] / "nope"]
    if not torch.backends.cuda.is_built():
        code, _, err = _run(capsys, *argv, "--device", "cuda")
        assert (code, err) == (2, "recot ask: error: --device cuda: this PyTorch build has no CUDA support\n")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, _, err = _run(capsys, *argv, "--device", "cuda:0")
    assert (code, err) == (2, "recot ask: error: --device cuda:0: no CUDA device is available on this machine\n")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, _, err = _run(capsys, *argv, "--device", "cuda:2")
    assert (code, err) == (2, "recot ask: error: --device cuda:2: this machine has 2 CUDA device(s), cuda:0 to cuda:1\n")


def test_warnings_are_printed_as_recot_warnings(setup, capsys, tmp_path) -> None:
    common = ["--model", setup["model"], "--frames", "8", "--max-new-tokens", "2", "--cache-dir", tmp_path, "--no-progress"]
    assert _run(capsys, "ask", setup["video"], "What?", *common)[0] == 0
    [entry] = (tmp_path / "encoded").glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated: the cache must notice, warn and recompute
    code, _, err = _run(capsys, "ask", setup["video"], "What?", *common)
    assert code == 0
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith(f"recot ask: warning: cache entry {entry} is corrupt or stale: unreadable (")
    assert warning.endswith("; recomputing")
    assert "cache.py" not in err and "CacheCorruptWarning" not in err


def test_model_specifications_are_the_same_everywhere(capsys, tmp_path) -> None:
    video = write_video(tmp_path / "v.mp4", num_frames=8)
    argv = ["ask", video, "Hello?", "--model", "tiny", "--frames", "4", "--max-new-tokens", "3", "--json",
            "--no-progress", "--cache-dir", tmp_path]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert ("recot ask: note: using the built-in UNTRAINED 'tiny' model (random weights, seed 0); answers are "
            "meaningless. Pass --model DIR for a trained checkpoint.") in err.splitlines()  # fmt: skip
    code, plan_out, _ = _run(capsys, "plan", "--frames", "8", "--model", "tiny", "--json")
    assert code == 0 and json.loads(plan_out)["num_groups"] == 2
    # The library takes the same names and builds the same weights in the same place.
    chat = VideoChat.from_pretrained("tiny", cache=tmp_path)
    assert chat.checkpoint_dir == tmp_path / "models" / "untrained-tiny-seed0"
    answer = chat.ask(video, "Hello?", GenerationOptions(max_new_tokens=3), FrameSampling(num_frames=4))
    assert answer.token_ids == json.loads(out)["token_ids"] and answer.cache_hit  # the CLI's encoding, from the cache


def test_resolve_model(tmp_path, setup) -> None:
    # The trained default model ships in the package (src/recot/weights/default); presets stay untrained.
    shipped = shipped_default_dir()
    assert shipped is not None and shipped.parts[-3:] == ("recot", "weights", "default")
    assert resolve_model(None).directory == shipped == resolve_model("default").directory
    assert not resolve_model("default").untrained and resolve_model("default").config().extra["training"]
    assert resolve_model("small").preset == "small" and resolve_model("small").untrained
    assert resolve_model("tiny").preset == "tiny" and resolve_model("tiny").untrained
    source = resolve_model(setup["model"])
    assert source.directory == setup["model"] and not source.untrained
    assert source.config().to_json_dict() == tiny_model_and_processor()[0].config.to_json_dict()
    with pytest.raises(ModelSpecError, match="does not exist"):
        resolve_model(tmp_path / "nope")
    (tmp_path / "tiny").mkdir()  # a directory wins over the preset of the same name
    with pytest.raises(ModelSpecError, match="has no config.json"):
        resolve_model(tmp_path / "tiny")


def test_untrained_preset_is_announced_and_reused_and_the_default_is_not(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RECOT_CACHE_DIR", str(tmp_path))
    video = write_video(tmp_path / "v.mp4", num_frames=8)
    small = ["ask", video, "Hello?", "--model", "small", "--frames", "4", "--max-new-tokens", "3", "--json", "--no-progress"]
    code, out, err = _run(capsys, *small)
    assert code == 0, err
    assert "recot ask: note: using the built-in UNTRAINED 'small' model (random weights, seed 0)" in err
    model_dir = tmp_path / "models" / "untrained-small-seed0"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert list(tmp_path.rglob("*.lock")) == []
    built = (model_dir / "model.safetensors").stat().st_mtime_ns
    code, out2, _ = _run(capsys, *small)
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == built  # loaded, not rebuilt
    assert json.loads(out2)["token_ids"] == json.loads(out)["token_ids"] and json.loads(out2)["cache_hit"]
    # Without --model: the shipped default, trained, with no notice; "--model default" is the same model.
    code, out3, err3 = _run(capsys, "ask", video, "Hello?", "--frames", "4", "--max-new-tokens", "3", "--json", "--no-progress")
    assert code == 0 and "note:" not in err3 and not json.loads(out3)["cache_hit"]
    code, out4, _ = _run(capsys, "ask", video, "Hello?", "--model", "default", "--frames", "4", "--max-new-tokens", "3", "--json", "--no-progress")
    assert json.loads(out4)["token_ids"] == json.loads(out3)["token_ids"] and json.loads(out4)["cache_hit"]


def test_plan_command(capsys) -> None:
    code, out, _ = _run(capsys, "plan", "--frames", "8192", "--model", "videoxl-pro-3b", "--device", "cuda", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["dtype"] == "bfloat16" and plan["num_groups"] == 2048
    assert plan["visual_tokens"] == 2048 * 144 and plan["llm_input_tokens"] <= 32768
    assert plan["encode"]["token_store"] == 2048 * 144 * 2048 * 2
    code, out, _ = _run(capsys, "plan", "--frames", "256")
    assert code == 0 and "encode peak:" in out and "answer peak:" in out and "kv_cache" in out


def test_demo_runs_the_main_job_on_the_generated_sample(capsys, tmp_path) -> None:
    """The main job as a user runs it: the default model answers the demo question about the whole hour."""
    argv = ["demo", "--cache-dir", tmp_path, "--json", "--no-progress"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    record = json.loads(out)
    assert record["video"].endswith("samples/qa-test-1100002-1h-64px-1fps.mp4")
    assert record["question"] == "What is on screen at 37:12?"
    assert "the scene at 37:12 is 'cave'" in err  # the truth, drawn by the generator
    assert record["frames"] == 3600 and record["groups"] == 900 and not record["cache_hit"]
    assert record["answer"] == "cave"
    assert "UNTRAINED" not in err and "llava_qwen" not in err
    assert list(tmp_path.rglob("*.lock")) == []
    code, out, err = _run(capsys, *argv)
    assert code == 0 and json.loads(out)["cache_hit"] and "writing the sample video" not in err


def test_unusable_cache_dir_is_an_input_error(setup, capsys, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # an untrained preset is built in the cache directory: it cannot be
    code, _, err = _run(capsys, "ask", setup["video"], "Why?", "--model", "small", "--cache-dir", blocker / "cache",
                        "--no-progress")  # fmt: skip
    assert code == 1 and err.startswith("recot ask: error: cannot load the model: ") and len(err.splitlines()) == 1
    code, _, err = _run(capsys, "ask", setup["video"], "Why?", "--model", setup["model"], "--cache-dir", blocker / "cache")
    assert code == 1 and err.startswith(f"recot ask: error: cannot create the cache directory {blocker / 'cache'}: ")


def test_compile_without_a_working_compiler_is_one_line(setup, capsys, monkeypatch) -> None:
    """--compile on a machine where torch.compile cannot build its kernels: the error torch raises then."""
    import torch._dynamo.exc

    def fail(*args, **kwargs):
        raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("No working C++ compiler found"), None)

    # (Breaking the real compiler config instead would poison inductor's cached compiler check for later tests.)
    monkeypatch.setattr(VideoChat, "ask_many", fail)
    code, _, err = _run(capsys, "ask", setup["video"], "Why?", "--model", setup["model"], "--frames", "8",
                        "--no-cache", "--no-progress", "--compile")  # fmt: skip
    assert code == 1
    assert err.splitlines()[-1].startswith("recot ask: error: --compile: torch.compile failed on this machine (")
    assert err.splitlines()[-1].endswith("; run without --compile")
