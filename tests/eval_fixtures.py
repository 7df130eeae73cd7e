"""Shared pieces of the evaluation tests: benchmark files in their published shapes, and a scripted chat.

Benchmark data is never committed: each test writes the few rows it needs in
the layout the benchmark publishes (see docs/eval.md for the sources).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine_fixtures import tiny_model_and_processor
from recot.engine import Answer, Timings
from recot.eval.api import LoadedData, Task
from recot.eval.runner import Evaluation, Shard


def printable_tiny_model(seed: int = 0):
    """The tiny preset made to give visible, input-dependent answers.

    A random tiny model mostly emits ids with no text (the byte tokenizer has
    260 of its 512 ids) and nearly the same tokens for every input. Here the
    (tied) token embeddings are zero outside printable ASCII, and the LLM's
    attention is sharpened (queries and keys x10, embeddings x3), so the greedy
    answers are text that changes with the video and question: tests that
    compare outputs then compare something.
    """
    model, processor = tiny_model_and_processor(seed=seed)
    with torch.no_grad():
        weight = model.language_model.get_input_embeddings().weight
        printable = torch.zeros(weight.shape[0], dtype=torch.bool)
        printable[32:127] = True
        weight[~printable] = 0.0
        weight *= 3.0
        for layer in model.language_model.model.layers:
            layer.self_attn.q_proj.weight *= 10.0
            layer.self_attn.k_proj.weight *= 10.0
    return model, processor


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def touch_videos(folder: Path, names: list[str]) -> None:
    """Placeholder video files: the scripted chat never decodes them, the harness only checks they exist."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not decoded")


@dataclass
class FakeEncoding:
    video: str
    frame_indices: list[int]
    cache_hit: bool = False
    encode_seconds: float = 0.0


class ScriptedChat:
    """Stands in for ``VideoChat`` in scoring tests: ``script(video, prompt)`` is the model's raw output.

    Records every encode, prompt and chat turn (system prompt, answer prefix) so tests can check what the
    harness asked.
    """

    def __init__(self, script: Callable[[str, str], str], frame_indices: list[int] | None = None) -> None:
        self.script = script
        self.frame_indices = frame_indices or [0, 10, 20, 30]
        self.encoded: list[str] = []
        self.prompts: list[str] = []
        self.turns: list[tuple[str | None, str]] = []

    def encode(self, path: Path, sampling: Any) -> FakeEncoding:
        self.encoded.append(str(path))
        return FakeEncoding(str(path), self.frame_indices)

    def ask(
        self, encoding: FakeEncoding, prompt: str, options: Any, *, system_prompt: str | None = None,
        answer_prefix: str = "",
    ) -> Answer:
        self.prompts.append(prompt)
        self.turns.append((system_prompt, answer_prefix))
        text = self.script(encoding.video, prompt)
        return Answer(
            video=encoding.video, question=prompt, answer=text, token_ids=[], frames=len(self.frame_indices), groups=1,
            visual_tokens=9, visual_tokens_kept=7, llm_input_tokens=20, new_tokens=1, cache_hit=False,
            timings=Timings(encode=0.0, answer=0.0, total=0.0),
        )  # fmt: skip


def run_scripted(
    task: Task, data: LoadedData, chat: Any, run_dir: Path, extractor: str = "legacy", seed: int = 0
) -> dict:
    """Run ``task`` over ``data`` with ``chat`` in one process; returns results.json as written."""
    config = {"task": task.name, "extractor": extractor, "seed": seed, "note": "scripted test"}
    Evaluation(task, data, chat, sampling=None, options=None, config=config, run_dir=run_dir,
               extractor=extractor, seed=seed, progress=False, shard=Shard()).run()  # fmt: skip
    return json.loads((run_dir / "results.json").read_text())


def mlvu_original_rows() -> dict[str, list[dict[str, Any]]]:
    """MLVU's own layout: one file per task type, the answer given as the candidate text."""
    return {
        "1_plotQA.json": [
            {"video": "movie101_1.mp4", "duration": 400.5, "question": "What does the hero hold?",
             "candidates": ["a sword", "a cup", "a map", "a lamp"], "answer": "a cup", "question_type": "plotQA"},
            {"video": "movie101_2.mp4", "duration": 300.0, "question": "Where is the boat?",
             "candidates": ["river", "sea", "lake", "pool"], "answer": "river", "question_type": "plotQA"},
            {"video": "movie101_3.mp4", "duration": 200.0, "question": "Who sings?",
             "candidates": ["the cat", "the dog", "the bird", "the fox"], "answer": "the fox",
             "question_type": "plotQA"},
        ],
        "2_needle.json": [
            {"video": "needle_7.mp4", "duration": 500.0, "question": "What is on the table?",
             "candidates": ["keys", "phone", "book", "pen"], "answer": "book", "question_type": "needle"},
            {"video": "needle_8.mp4", "duration": 500.0, "question": "Broken row",
             "candidates": ["x", "y"], "answer": "z", "question_type": "needle"},
        ],
    }  # fmt: skip
