"""The lmms-eval plugin end to end: ``lmms-eval --model recot`` on a local YAML task over generated videos.

lmms-eval finds the model through the ``lmms_eval.models`` entry point that
recot's pyproject.toml declares. The test installs exactly that entry point
(read from pyproject.toml) as a dist-info folder on PYTHONPATH, runs the
lmms-eval command line in a subprocess, and checks its answers against
``VideoChat`` called directly with the same sampling and generation settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_fixtures import write_video
from eval_fixtures import printable_tiny_model

ROOT = Path(__file__).resolve().parents[1]

TASK_YAML = """\
task: recot_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 5
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0
"""

TASK_UTILS = """\
import os

def doc_to_visual(doc):
    return [os.path.join({videos!r}, doc["video"])]

def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]

def process_results(doc, results):
    return {{"exact": float(results[0].strip() == doc["answer"])}}
"""


def _entry_points_from_pyproject() -> str:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lmms_eval.models"]
    return "[lmms_eval.models]\n" + "".join(f"{name} = {target}\n" for name, target in table.items())


@pytest.mark.slow
def test_lmms_eval_runs_recot_on_a_local_video_task(tmp_path: Path) -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        pytest.skip("lmms-eval is not installed (pip install 'recot[eval]')")
    from recot.engine import FrameSampling, GenerationOptions, VideoChat

    model, processor = printable_tiny_model()
    model.save_pretrained(tmp_path / "model", tokenizer=processor.tokenizer)
    (tmp_path / "videos").mkdir()
    docs = []
    for v in range(3):
        write_video(tmp_path / "videos" / f"v{v}.mp4", num_frames=24, seed=v)
        for q in range(2):
            docs.append({"video": f"v{v}.mp4", "question": f"Colour {v}-{q}?\nA. red\nB. blue", "answer": "AB"[q]})
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "recot_tiny.yaml").write_text(TASK_YAML.format(docs=tmp_path / "docs.jsonl"))
    (tasks / "utils.py").write_text(TASK_UTILS.format(videos=str(tmp_path / "videos")))
    dist_info = tmp_path / "plugin" / "recot_entry_points-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: recot-entry-points\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(_entry_points_from_pyproject())

    path = f"{ROOT / 'src'}{os.pathsep}{tmp_path / 'plugin'}"
    env = {**os.environ, "PYTHONPATH": path, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    model_args = f"pretrained={tmp_path / 'model'},max_frames_num=8,cache_dir={tmp_path / 'cache'}"
    command = [sys.executable, "-m", "lmms_eval", "--model", "recot", "--model_args", model_args, "--tasks",
               "recot_tiny", "--include_path", str(tasks), "--output_path", str(tmp_path / "out"), "--log_samples",
               "--batch_size", "1"]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    [samples_file] = list((tmp_path / "out").rglob("*_samples_recot_tiny.jsonl"))
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    [results_file] = list((tmp_path / "out").rglob("*_results.json"))
    metric = json.loads(results_file.read_text())["results"]["recot_tiny"]["exact,none"]

    # The same questions through VideoChat: 8 uniform frames, 5 greedy tokens, cut at lmms-eval's "\n\n".
    chat = VideoChat.from_pretrained(tmp_path / "model")
    expected = []
    for doc in docs:
        encoding = chat.encode(tmp_path / "videos" / doc["video"], FrameSampling(num_frames=8))
        answer = chat.ask(encoding, doc["question"], GenerationOptions(max_new_tokens=5)).answer
        expected.append(answer.split("\n\n")[0])
    responses = [
        s["filtered_resps"] if isinstance(s["filtered_resps"], str) else s["filtered_resps"][0] for s in samples
    ]
    assert responses == expected and any(expected)
    assert metric == pytest.approx(sum(e.strip() == d["answer"] for e, d in zip(expected, docs, strict=False)) / len(docs))
    # Each of the 3 videos was encoded once, into the cache named in model_args.
    assert len(list((tmp_path / "cache" / "encoded").glob("*.safetensors"))) == 3


@pytest.mark.slow
def test_plugin_registration_and_unsupported_requests() -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        pytest.skip("lmms-eval is not installed (pip install 'recot[eval]')")
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from recot.eval.lmms_plugin import MANIFEST, RecotLMM

    registry = ModelRegistryV2()
    registry.register_manifest(MANIFEST)
    assert registry.get_model_class("recot") is RecotLMM  # also checks is_simple against the manifest
    assert registry.resolve("videoxlpro_recot").model_id == "recot"
    model = RecotLMM.__new__(RecotLMM)  # no weights needed for the refusals
    with pytest.raises(NotImplementedError, match="answers by generation only"):
        model.loglikelihood([])
    with pytest.raises(NotImplementedError, match="multi-round"):
        model.generate_until_multi_round([])
    # max_visual_tokens reads as `recot ask --max-visual-tokens` does.
    from recot.eval.lmms_plugin import _visual_token_limit

    assert (_visual_token_limit("64"), _visual_token_limit("all"), _visual_token_limit(32)) == (64, "all", 32)
    with pytest.raises(ValueError, match="max_visual_tokens: expected an integer >= 1 or 'all', got '0'"):
        _visual_token_limit("0")
