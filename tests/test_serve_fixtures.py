"""Shared pieces of the serve tests: a scripted tiny model, live uvicorn servers and small videos.

(Collected by pytest for its name only; it holds no tests.)

The untrained tiny model answers with newlines only, which strip to an empty
answer. :func:`scripted_chat` edits it so that the answer is readable and
known: the language model's layers are silenced (their output projections
zeroed, so the last hidden state is the last token's embedding) and an untied
``lm_head`` maps each character of ``PHRASE`` to the next one, the prompt's final
newline to the first, and the last to ``<|im_end|>`` (or, to generate without
end, to a newline, which starts the phrase again). Vision, compressor and selector keep their random
weights, so encodings and selector scores are real.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from engine_fixtures import tiny_model_and_processor
from recot.engine import EncodingCache, VideoChat

PHRASE = "Lynx jumps."  # every character once: the next one follows from the current one alone


def scripted_chat(cache_dir: Path, endless: bool = False) -> VideoChat:
    """A tiny-preset VideoChat whose greedy answer is ``PHRASE`` (lines of it without end when ``endless``)."""
    model, processor = tiny_model_and_processor(tie_word_embeddings=False)
    tokenizer = processor.tokenizer
    ids = tokenizer(PHRASE, add_special_tokens=False).input_ids
    assert len(ids) == len(set(ids)) == len(PHRASE)
    newline = tokenizer("\n", add_special_tokens=False).input_ids[0]
    end = newline if endless else tokenizer.convert_tokens_to_ids("<|im_end|>")
    lm = model.language_model
    with torch.no_grad():
        for layer in lm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = lm.get_input_embeddings().weight
        head = torch.zeros_like(lm.lm_head.weight)
        for current, following in zip([newline, *ids], [*ids, end], strict=True):
            head[following] = embeddings[current] / embeddings[current].norm()
        lm.lm_head.weight.copy_(head)
    return VideoChat(model, processor, cache=EncodingCache(cache_dir, "1GB"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for_status(
    client, video_id: str, statuses: tuple[str, ...] = ("ready", "failed"), timeout: float = 60
) -> dict:
    """Poll ``GET /v1/videos/{id}`` until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/v1/videos/{video_id}").json()
        if record["status"] in statuses or time.monotonic() > deadline:
            return record
        time.sleep(0.05)
