"""The memory planner: sizes add up, and its estimates match measured peaks on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from recot import VideoXLProConfig
from recot.engine.memory import count_parameters, plan_memory
from recot.model.processor import VideoXLProProcessor
from recot.model.tokenizer import build_byte_tokenizer
from recot.model.videoxl_pro import VideoXLPro


def test_parameter_count_and_sizes() -> None:
    config = VideoXLProConfig.from_preset("tiny")
    torch.manual_seed(0)
    assert count_parameters(config) == sum(p.numel() for p in VideoXLPro(config).parameters())
    plan = plan_memory(config, 100, 13, dtype="bf16")
    assert plan.num_groups == 25 and plan.visual_tokens == 225
    assert plan.encode["weights"] == count_parameters(config) * 2
    assert plan.encode["token_store"] == 225 * 64 * 2


def test_encode_peak_grows_only_by_the_tokens() -> None:
    config = VideoXLProConfig.from_preset("videoxl-pro-3b")
    small, large = plan_memory(config, 256, 10, "bf16"), plan_memory(config, 8192, 10, "bf16")
    assert large.encode_peak - small.encode_peak == (2048 - 64) * 144 * 2048 * 2
    # The visual budget keeps the LLM input within the 32K context at any length.
    assert large.llm_input_tokens <= 32768 - 128
    assert large.visual_tokens_kept == (32768 - 64 - 2048 * 10 - 128) // 16 * 16


# Sizes chosen so that activations (~100-500 MiB) dwarf the allocator's fixed overhead.
_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, threading, time
    import numpy as np, psutil, torch
    from recot import EncodedVideo, VideoXLPro, VideoXLProConfig, VideoXLProProcessor
    from recot.engine import GenerationOptions, VideoChat, VideoEncoding
    from recot.model import StreamingEncoder
    from recot.model.tokenizer import build_byte_tokenizer
    phase, overrides, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    config = VideoXLProConfig.from_preset("small", **overrides)
    torch.manual_seed(0)
    model = VideoXLPro(config).eval()
    processor = VideoXLProProcessor(build_byte_tokenizer(), config)
    chunk = config.compressor_batch_size * config.frames_per_group
    frames = np.random.default_rng(0).integers(0, 256, (chunk, config.image_size, config.image_size, 3), dtype=np.uint8)
    groups = -(-n // 4)
    encoding = VideoEncoding("x", EncodedVideo(torch.randn(groups, config.tokens_per_group, config.hidden_size),
                             torch.arange(groups, dtype=torch.float64)), n, None, False, 0.0)
    me, peak, done = psutil.Process(), [0], threading.Event()
    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.0005)
    base = me.memory_info().rss
    thread = threading.Thread(target=poll)
    thread.start()
    if phase == "encode":
        encoder = StreamingEncoder(model, n)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            encoder.add(frames[:m], np.arange(i, i + m) / 30)
        encoder.finish()
        prompt = 0
    else:
        VideoChat(model, processor).ask(encoding, "What happens in the video?", GenerationOptions(max_new_tokens=4))
        prompt = len(processor.tokenize_prompt("What happens in the video?")) - 1
    done.set()
    thread.join()
    print(json.dumps({"delta": peak[0] - base, "prompt": prompt}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "overrides", "frames"),
    [
        ("encode", {"image_size": 224, "grid_size": 16, "vision_hidden_size": 256, "vision_intermediate_size": 1024}, 256),
        ("answer", {"hidden_size": 256, "intermediate_size": 1024}, 2048),
    ],
)
def test_plan_matches_measured_peak_on_cpu(phase, overrides, frames) -> None:
    # glibc would otherwise keep freed tensors in its heap, so RSS would show the
    # allocator's high-water mark rather than the live tensors the plan counts.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", _MEASURE, phase, json.dumps(overrides), str(frames)],
                         capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    config = VideoXLProConfig.from_preset("small", **overrides)
    time_tokens = VideoXLProProcessor(build_byte_tokenizer(), config).time_text_tokens()
    assert time_tokens == len(b"Time 0000.0s:")  # one token a byte
    plan = plan_memory(config, frames, time_tokens, prompt_tokens=measured["prompt"] or 64, max_new_tokens=4)
    already_there = plan.encode["weights"] + (plan.encode["token_store"] if phase == "answer" else 0)
    planned = (plan.encode_peak if phase == "encode" else plan.answer_peak) - already_there
    # +-35%: the plan counts tensors, not allocator slack, kernel workspaces or
    # PyTorch's lazily built kernels (~20 MiB on first use).
    assert 0.65 < measured["delta"] / planned < 1.35, (measured["delta"] / 2**20, planned / 2**20)
