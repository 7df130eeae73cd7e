"""Scheduling and limits of ``recot serve``: 429 with Retry-After, disconnects, timeouts, answers between encode chunks.

The model here never stops on its own (the scripted model in its endless
form), so an answer lasts as long as ``max_tokens`` allows unless something
cuts it short.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import httpx
import pytest

from engine_fixtures import write_video
from recot.engine import GenerationOptions
from recot.serve import ServeSettings, create_app
from recot.serve.metrics import Metrics
from recot.serve.worker import AnswerJob, Worker, WorkerStopped
from test_serve_api import MODEL, expect_error, metric, video_message
from test_serve_fixtures import PHRASE, live_server, scripted_chat, wait_for_status


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    write_video(root / "a.mp4", num_frames=48)
    return root


@contextmanager
def serving(root, **settings):
    chat = scripted_chat(root / "cache", endless=True)
    config = ServeSettings(**{"model_name": MODEL, "upload_dir": root / "uploads", "media_dir": root, **settings})
    with live_server(create_app(chat, config)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, chat


def ask(max_tokens: int, stream: bool = False, url: str = "a.mp4") -> dict:
    return {"model": MODEL, "messages": video_message(url), "frames": 16, "max_tokens": max_tokens, "stream": stream}


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_queue_full_is_429_and_a_disconnect_cancels_the_stream(media, tmp_path) -> None:
    with serving(media, max_queue=1, max_new_tokens=4000, upload_dir=tmp_path / "up") as (client, _):
        with client.stream("POST", "/v1/chat/completions", json=ask(3000, stream=True)) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break  # the answer is streaming: the one admitted request is running
            refused = client.post("/v1/chat/completions", json=ask(4))
            error = expect_error(
                refused, 429, "rate_limit_error", r"busy: 1 answer requests are in already \(--max-queue 1\)"
            )
            assert error["code"] == "queue_full" and int(refused.headers["retry-after"]) >= 1
        # Leaving the block closed the connection mid-answer: the generation stops at the next token.
        assert wait_until(lambda: metric(client, "recot_answers_total", outcome="cancelled") == 1)
        assert metric(client, "recot_generated_tokens_total") < 3000
        assert metric(client, "recot_rejected_total", kind="answer") == 1
        after = client.post("/v1/chat/completions", json=ask(11))  # the slot is free again
        assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == PHRASE
        assert after.json()["choices"][0]["finish_reason"] == "length"


def test_a_disconnect_cancels_a_non_streamed_answer(media, tmp_path) -> None:
    with serving(media, max_new_tokens=4000, upload_dir=tmp_path / "up") as (client, _):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=ask(3000), timeout=1.0)
        assert wait_until(lambda: metric(client, "recot_answers_total", outcome="cancelled") == 1)
        assert time.monotonic() - started < 30 and metric(client, "recot_generated_tokens_total") < 3000
        assert metric(client, "recot_queue_depth", kind="answer") == 0


def test_request_timeout(media, tmp_path) -> None:
    with serving(media, max_new_tokens=4000, request_timeout=1.0, upload_dir=tmp_path / "up") as (client, _):
        started = time.monotonic()
        expect_error(client.post("/v1/chat/completions", json=ask(3000)), 504, "timeout_error",
                     r"longer than the server's --request-timeout \(1 s\) while answering")  # fmt: skip
        assert 1.0 <= time.monotonic() - started < 15  # 3000 tokens would take minutes
        with client.stream("POST", "/v1/chat/completions", json=ask(3000, stream=True)) as stream:
            events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["type"] == "timeout_error"
        pieces = [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2]]
        assert ((PHRASE + "\n") * 300).startswith("".join(pieces))  # what came before the time ran out was streamed
        assert metric(client, "recot_answers_total", outcome="timeout") == 2


def test_answers_are_not_stuck_behind_a_long_encode(media, tmp_path) -> None:
    with serving(media, max_frames=4000, max_encode_queue=1, thumbnails=0, upload_dir=tmp_path / "up") as (
        client,
        chat,
    ):
        with open(media / "a.mp4", "rb") as f:
            short = client.post("/v1/videos", files={"file": ("short.mp4", f)}, data={"frames": "8"}).json()["id"]
        assert wait_for_status(client, short)["status"] == "ready"
        # 4000 frames (the clip's 48, repeated) are 250 compressor chunks: seconds of encoding (with 2000, a fast
        # run once finished the encode during the short answer).
        with open(media / "a.mp4", "rb") as f:
            long = client.post("/v1/videos", files={"file": ("long.mp4", f)}, data={"frames": "4000"}).json()["id"]
        encoding = wait_for_status(client, long, ("encoding",))
        assert encoding["status"] == "encoding"
        with open(media / "a.mp4", "rb") as f:  # the encode queue (1) is full: no more uploads...
            expect_error(client.post("/v1/videos", files={"file": ("x.mp4", f)}), 429, "rate_limit_error",
                         r"--max-encode-queue 1\)")  # fmt: skip
        new_frames = {**ask(4), "frames": 24}  # ... nor questions that need a new encode
        expect_error(
            client.post("/v1/chat/completions", json=new_frames), 429, "rate_limit_error", "--max-encode-queue"
        )

        started = time.monotonic()
        answer = client.post("/v1/chat/completions", json={**ask(11, url=f"recot-video://{short}"), "frames": None})
        latency = time.monotonic() - started
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == PHRASE
        during = client.get(f"/v1/videos/{long}").json()
        # Answered while the encode runs. Progress moves in a few steps (1/3, 2/3, 1 here) and reads 1 once the last
        # one is done, until the encode is stored and the video is ready: an answer asked during that last step
        # comes back with progress 1 and the status still "encoding" (seen once in CI).
        assert during["status"] == "encoding" and 0 < during["progress"] <= 1
        assert latency < 20  # (unloaded: well under a second; the whole encode: about a minute)

        assert client.delete(f"/v1/videos/{long}").status_code == 200  # cancels the encode at its next chunk
        assert wait_until(lambda: metric(client, "recot_queue_depth", kind="encode") == 0)
        assert all(entry.metadata["frames"] != "4000" for entry in chat.cache.entries())


def test_worker_stop_fails_waiting_jobs(tmp_path) -> None:
    chat = scripted_chat(tmp_path / "cache")
    worker = Worker(chat, Metrics())  # not started: jobs wait
    job = AnswerJob(encoding=None, question="?", options=GenerationOptions(), deadline=time.monotonic() + 60)
    worker.submit_answer(job)
    assert worker.depth() == {"answer": 1, "encode": 0}
    worker.stop()
    with pytest.raises(WorkerStopped, match="shutting down"):
        job.future.result(timeout=1)
    with pytest.raises(WorkerStopped):
        worker.submit_answer(AnswerJob(encoding=None, question="?", options=GenerationOptions(), deadline=0))


def test_worker_order_answers_between_chunks_without_starving_the_encode(monkeypatch, tmp_path) -> None:
    """The scheduling policy alone, with the model's work replaced by a log of what ran when."""
    from types import SimpleNamespace

    import recot.serve.worker as worker_module
    from recot.serve.worker import EncodeJob

    log: list[str] = []
    worker = Worker(scripted_chat(tmp_path / "cache"), Metrics())

    def question(name: str) -> AnswerJob:
        return AnswerJob(encoding=name, question=name, options=GenerationOptions(), deadline=time.monotonic() + 60)

    def fake_answer(chat, encoding, question_text, options, on_text, on_selection, should_stop):
        log.append(question_text)
        if question_text.startswith("again") and int(question_text[5:]) < 12:  # a client that asks again at once
            worker.submit_answer(question(f"again{int(question_text[5:]) + 1}"))
        return SimpleNamespace(new_tokens=1), False

    def fake_encode(chat, path, plan, key, between_chunks):
        for chunk in range(1, 6):
            log.append(f"chunk{chunk}")
            if chunk == 2:
                worker.submit_answer(question("during"))
                worker.submit_answer(question("again0"))
            between_chunks(chunk, 5)
        return SimpleNamespace(num_frames=20, cache_hit=False)

    monkeypatch.setattr(worker_module, "answer_streaming", fake_answer)
    monkeypatch.setattr(worker_module, "encode_interleaved", fake_encode)
    worker.submit_answer(question("first"))
    encode = EncodeJob(path="v.mp4", plan=None, key="k")
    worker.submit_encode(encode)
    worker.submit_answer(question("second"))
    worker.start()
    try:
        encode.future.result(timeout=10)
        assert wait_until(lambda: log.count("chunk5") and "again12" in log, timeout=10)
    finally:
        worker.stop()
    # Arrival order to start; then questions between chunks, one round per gap, so the encode keeps moving.
    assert log[:4] == ["first", "chunk1", "second", "chunk2"]
    assert log[4:7] == ["during", "again0", "chunk3"]
    assert log[7:11] == ["again1", "chunk4", "again2", "chunk5"]
    assert log[11:] == [f"again{i}" for i in range(3, 13)]
