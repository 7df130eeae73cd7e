"""``recot serve``'s HTTP API against a live uvicorn on 127.0.0.1: the openai client, uploads, errors, security.

The model is the scripted tiny model of ``test_serve_fixtures`` (its greedy
answer is "Lynx jumps."); its encoder and selector are real, so token counts
and selector scores are checked against the engine computed independently.
"""

from __future__ import annotations

import base64
import io
import json
import re

import httpx
import numpy as np
import openai
import pytest
import torch
from PIL import Image

from engine_fixtures import write_video
from recot.engine import FrameSampling, GenerationOptions
from recot.serve import ServeSettings, create_app
from recot.serve.selection import group_selection
from test_serve_fixtures import PHRASE, live_server, scripted_chat, wait_for_status

KEY = "test-key-0123"
MODEL = "tiny-test"
QUESTION = "What moves?"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serve")
    media = root / "media"
    (media / "clips").mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    video = write_video(media / "clips" / "a.mp4", num_frames=48)
    write_video(outside / "secret.mp4", num_frames=48, seed=5)
    (media / "escape.mp4").symlink_to(outside / "secret.mp4")
    (media / "inside-link.mp4").symlink_to(video)
    (root / "noise.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return {"root": root, "media": media, "outside": outside, "video": video, "noise": root / "noise.bin"}


@pytest.fixture(scope="module")
def server(files):
    chat = scripted_chat(files["root"] / "cache")
    settings = ServeSettings(
        model_name=MODEL, api_key=KEY, upload_dir=files["root"] / "uploads", media_dir=files["media"],
        max_upload_bytes=60_000, max_frames=64, max_new_tokens=64, thumbnails=8,
    )  # fmt: skip
    app = create_app(chat, settings)
    with live_server(app) as url:
        yield {"url": url, "chat": chat, "app": app, "settings": settings}


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        yield client


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def data_url(path, media_type: str = "video/mp4") -> str:
    return f"data:{media_type};base64," + base64.b64encode(path.read_bytes()).decode()


def video_message(url: str, question: str = QUESTION, kind: str = "video_url") -> list[dict]:
    return [{"role": "user", "content": [{"type": kind, kind: {"url": url}}, {"type": "text", "text": question}]}]


def chat_body(url: str, **extra) -> dict:
    return {"model": MODEL, "messages": video_message(url), "frames": 16, **extra}


def expect_error(response: httpx.Response, status: int, kind: str, message: str, param: str | None = None) -> dict:
    """The response is an OpenAI-shaped error with this status, type, message fragment (regex) and param."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind and re.search(message, error["message"]), error
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in response.text
    assert not any(inner in error["message"] for inner in ("/.inline/", "/uploads/", "/cache/"))  # no server paths
    return error


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when absent)."""
    text = http.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# ----- the openai client ------------------------------------------------------------------------------
def test_models_and_health(server, client) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(server["url"] + "/health").json()  # no key needed
    assert health["status"] == "ok" and health["model"] == MODEL and health["queue"] == {"answer": 0, "encode": 0}


def test_openai_client_answer_matches_the_engine(server, client, files) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=video_message(data_url(files["video"])), max_tokens=32, extra_body={"frames": 16}
    )
    choice = response.choices[0]
    assert choice.message.content == PHRASE and choice.finish_reason == "stop" and choice.message.role == "assistant"

    # The same question through the engine directly, on an independently built identical model.
    reference = scripted_chat(files["root"] / "reference-cache")
    encoding = reference.encode(files["video"], FrameSampling(num_frames=16))
    answer = reference.ask(encoding, QUESTION, GenerationOptions(max_new_tokens=32))
    usage = response.usage
    assert (usage.completion_tokens, usage.prompt_tokens) == (answer.new_tokens, answer.llm_input_tokens)
    assert usage.total_tokens == answer.llm_input_tokens + answer.new_tokens
    assert (
        (usage.visual_tokens, usage.visual_tokens_kept)
        == (36, int(36 * 0.85))
        == (answer.visual_tokens, answer.visual_tokens_kept)
    )

    # The heatmap is the selector's own scores, averaged per group of 9 tokens.
    recot = response.recot
    assert recot["frames"] == 16 and recot["groups"] == 4 and not recot["cache_hit"]
    processor = reference.processor
    with torch.no_grad():
        inputs = reference.model.embed_inputs(
            processor.tokenize_prompt(QUESTION), encoding.encoded,
            processor.time_sequence_ids(encoding.encoded.timestamps),
        )  # fmt: skip
    scores, kept = inputs.selection.scores, inputs.selection.kept_visual
    selection = recot["selection"]
    assert selection["groups"] == 4 and selection["tokens_per_group"] == 9
    np.testing.assert_allclose(selection["scores"], scores.view(4, 9).mean(1).numpy(), atol=1e-4)
    kept_per_group = torch.zeros(36, dtype=torch.long).index_fill(0, kept, 1).view(4, 9).sum(1).tolist()
    assert selection["kept"] == kept_per_group and sum(kept_per_group) == 30
    np.testing.assert_allclose(selection["timestamps"], encoding.encoded.timestamps.numpy(), atol=1e-3)


def test_group_selection_summary() -> None:
    scores = torch.tensor([0.0, 1.0, 0.5, 0.5, 0.2, 0.4])
    summary = group_selection(scores, torch.tensor([1, 2, 5]), torch.tensor([0.0, 2.5, 5.0]))
    assert summary.scores == [0.5, 0.5, 0.3] and summary.kept == [1, 1, 1] and summary.timestamps == [0.0, 2.5, 5.0]
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        group_selection(scores, torch.tensor([0]), torch.zeros(4))


def test_openai_client_streaming(server, client, files) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=video_message(data_url(files["video"])), max_tokens=32, stream=True,
        stream_options={"include_usage": True}, extra_body={"frames": 16},
    )  # fmt: skip
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == PHRASE and len(pieces) >= 5  # token by token, spaces held back until a word follows
    assert chunks[0].choices[0].delta.role == "assistant"
    selection = [c.recot["selection"] for c in chunks if getattr(c, "recot", None) and "selection" in c.recot]
    assert len(selection) == 1 and selection[0]["groups"] == 4 and sum(selection[0]["kept"]) == 30
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12  # 11 characters + <|im_end|>
    assert len({c.id for c in chunks}) == 1


def test_raw_sse_format(http, files) -> None:
    with http.stream("POST", "/v1/chat/completions", json=chat_body(data_url(files["video"]), stream=True)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == PHRASE


def test_generation_parameters_are_honoured(client, files) -> None:
    url = data_url(files["video"])

    def ask(**kwargs) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=MODEL, messages=video_message(url), extra_body={"frames": 16}, **kwargs
        )

    short = ask(max_tokens=4)
    assert short.choices[0].message.content == "Lynx" and short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 4
    assert ask(max_completion_tokens=6).usage.completion_tokens == 6
    sampled = [ask(max_tokens=24, temperature=1.5, seed=s).choices[0].message.content for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]  # seeded sampling: same seed, same answer
    nucleus = ask(max_tokens=24, temperature=1.5, top_p=0.01, seed=3).choices[0].message.content
    assert nucleus == PHRASE  # top_p this small keeps only the most likely token
    assert ask(max_tokens=24, temperature=0).choices[0].message.content == PHRASE


def test_recot_options_frames_and_selection(http, files) -> None:
    body = chat_body(data_url(files["video"]), frames=32, keep_ratio=0.5)
    recot = http.post("/v1/chat/completions", json=body).json()["recot"]
    assert recot["frames"] == 32 and recot["groups"] == 8 and sum(recot["selection"]["kept"]) == int(72 * 0.5)
    usage = http.post("/v1/chat/completions", json={**body, "max_visual_tokens": 10}).json()["usage"]
    assert usage["visual_tokens"] == 72 and usage["visual_tokens_kept"] == 10
    every = http.post("/v1/chat/completions", json={**body, "max_visual_tokens": "all"}).json()["usage"]
    assert every["visual_tokens_kept"] == int(72 * 0.5)  # keep_ratio of all of them, as the released model does
    for bad in (0, "most"):
        refused = http.post("/v1/chat/completions", json={**body, "max_visual_tokens": bad})
        assert refused.status_code == 400 and "max_visual_tokens" in refused.text
    cached = http.post("/v1/chat/completions", json=body).json()["recot"]
    assert cached["cache_hit"]
    with_range = http.post("/v1/chat/completions", json={**chat_body(data_url(files["video"])), "frames": None,
                                                         "fps": 10, "start": 0.5, "end": 1.0}).json()  # fmt: skip
    assert with_range["recot"]["frames"] == 5
    assert all(0.5 <= t < 1.0 for t in with_range["recot"]["selection"]["timestamps"])


def test_image_url(http, tmp_path) -> None:
    image = Image.fromarray(np.full((40, 50, 3), (200, 30, 30), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = {"model": MODEL, "messages": video_message(url, kind="image_url")}
    response = http.post("/v1/chat/completions", json=body).json()
    assert response["choices"][0]["message"]["content"] == PHRASE and response["recot"]["frames"] == 1


# ----- uploads ------------------------------------------------------------------------------------------
def test_upload_encode_ask_delete(server, http, files) -> None:
    cache = server["chat"].cache
    with open(files["video"], "rb") as f:
        response = http.post(
            "/v1/videos", files={"file": ("../../etc/My clip.mp4", f, "video/mp4")}, data={"frames": "20"}
        )
    assert response.status_code == 200, response.text
    record = response.json()
    video_id = record["id"]
    assert re.fullmatch(r"vid-[0-9a-f]{24}", video_id) and record["filename"] == "My clip.mp4"
    assert record["status"] in ("queued", "encoding") and record["bytes"] == files["video"].stat().st_size
    assert (
        record["url"] == f"recot-video://{video_id}"
        and record["frames"] == 20
        and record["duration"] == pytest.approx(1.6)
    )
    stored = sorted(p.name for p in server["settings"].upload_dir.iterdir() if p.name.startswith(video_id))
    assert stored[0] == f"{video_id}.json" and f"{video_id}.mp4" in stored  # a server-chosen name

    ready = wait_for_status(http, video_id)
    assert ready["status"] == "ready" and ready["progress"] == 1.0 and ready["groups"] == 5
    thumbs = ready["thumbnails"]
    assert thumbs["count"] == 8 and len(thumbs["times"]) == 8 and thumbs["times"] == sorted(thumbs["times"])
    jpeg = http.get(thumbs["url"])
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (8 * thumbs["width"], thumbs["height"])
    assert video_id in [v["id"] for v in http.get("/v1/videos").json()["data"]]

    body = {"model": MODEL, "messages": video_message(f"recot-video://{video_id}")}
    answer = http.post("/v1/chat/completions", json=body).json()
    assert answer["choices"][0]["message"]["content"] == PHRASE
    assert answer["recot"]["frames"] == 20  # the upload's own sampling
    key = [k for k in (e.key for e in cache.entries()) if json.loads(cache.load(k)[1]["frames"]) == 20]
    assert len(key) == 1

    deleted = http.delete(f"/v1/videos/{video_id}")
    assert deleted.json() == {"id": video_id, "object": "video.deleted", "deleted": True}
    assert not any(p.name.startswith(video_id) for p in server["settings"].upload_dir.iterdir())
    assert key[0] not in [e.key for e in cache.entries()]  # its cached encoding is gone too
    expect_error(http.get(f"/v1/videos/{video_id}"), 404, "not_found_error", "unknown video id", "video_id")
    expect_error(http.post("/v1/chat/completions", json=body), 404, "not_found_error", "unknown video id")
    expect_error(http.delete(f"/v1/videos/{video_id}"), 404, "not_found_error", "unknown video id")


def test_upload_errors(server, http, files) -> None:
    upload_dir = server["settings"].upload_dir
    before = set(upload_dir.iterdir())
    expect_error(http.post("/v1/videos", content=b"raw", headers={"content-type": "video/mp4"}),
                 415, "invalid_request_error", "multipart/form-data")  # fmt: skip
    expect_error(http.post("/v1/videos", data={"frames": "8"}, files={"other": ("x", b"1")}),
                 400, "invalid_request_error", "no 'file' field", "file")  # fmt: skip
    expect_error(http.post("/v1/videos", files={"file": ("a.mp4", b"")}), 400, "invalid_request_error", "empty", "file")
    big = b"\0" * 70_000
    expect_error(http.post("/v1/videos", files={"file": ("a.mp4", big)}), 413, "invalid_request_error",
                 "larger than the server's limit of 60000 bytes .--max-upload-bytes.")  # fmt: skip
    noise = files["noise"].read_bytes()
    error = expect_error(
        http.post("/v1/videos", files={"file": ("n.mp4", noise)}), 400, "invalid_request_error", "n.mp4"
    )
    assert error["code"] == "invalid_video"
    with open(files["video"], "rb") as f:
        bad = http.post("/v1/videos", files={"file": ("a.mp4", f)}, data={"frames": "many"})
    expect_error(bad, 400, "invalid_request_error", "frames", "frames")
    with open(files["video"], "rb") as f:
        expect_error(http.post("/v1/videos", files={"file": ("a.mp4", f)}, data={"frames": "500"}),
                     400, "invalid_request_error", r"--max-frames 64", "frames")  # fmt: skip
    with open(files["video"], "rb") as f:
        expect_error(http.post("/v1/videos", files={"file": ("a.mp4", f)}, data={"colour": "red"}),
                     400, "invalid_request_error", "unknown parameter 'colour'")  # fmt: skip
    assert set(upload_dir.iterdir()) == before  # nothing half-written or rejected is left behind


# ----- chat errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "status", "kind", "message", "param"),
    [
        ({"model": "gpt-4o"}, 404, "not_found_error", "'gpt-4o' is not served here", "model"),
        ({"n": 2}, 400, "invalid_request_error", "only n=1", "n"),
        ({"stop": ["\n"]}, 400, "invalid_request_error", "not supported", "stop"),
        ({"keep_ratio": 1.5}, 400, "invalid_request_error", "less than or equal to 1", "keep_ratio"),
        ({"frames": 0}, 400, "invalid_request_error", "greater than or equal to 1", "frames"),
        ({"frames": 65}, 400, "invalid_request_error", r"--max-frames 64", "frames"),
        ({"fps": 2.0}, 400, "invalid_request_error", "frames or fps, not both", "frames"),
        ({"max_tokens": 65}, 400, "invalid_request_error", "more than the server allows", "max_tokens"),
        ({"temperature": -1}, 400, "invalid_request_error", "greater than or equal to 0", "temperature"),
        ({"keep_ratios": 0.5}, 400, "invalid_request_error", "unknown parameter 'keep_ratios'", "keep_ratios"),
        ({"tools": [{"type": "function"}]}, 400, "invalid_request_error", "not supported", "tools"),
        ({"start": 1.0, "end": 0.5}, 400, "invalid_request_error", "end 0.5 is not after start 1", "end"),
        ({"start": 30.0}, 400, "invalid_request_error", "past the end of the video", None),
        ({"messages": []}, 400, "invalid_request_error", "at least 1 item", "messages"),
    ],
)
def test_bad_parameters(http, files, change, status, kind, message, param) -> None:
    body = {**chat_body(data_url(files["video"])), **change}
    expect_error(http.post("/v1/chat/completions", json=body), status, kind, message, param)


@pytest.mark.parametrize(
    ("messages", "message", "param"),
    [
        ([{"role": "system", "content": "Be brief."}, *video_message("recot-video://vid-" + "0" * 24)],
         "role 'system'", "messages.0.role"),
        ([{"role": "user", "content": "Just text"}], "no video", "messages.0.content"),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "no video", "messages.0.content"),
        ([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clips/a.mp4"}}]}],
         "no question", "messages.0.content"),
        ([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clips/a.mp4"}},
                                       {"type": "image_url", "image_url": {"url": "clips/a.mp4"}},
                                       {"type": "text", "text": "Which?"}]}], "2 videos", "messages.0.content"),
        (video_message("clips/a.mp4") * 2, "got 2 messages", "messages"),
        ([{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": "x"}}]}], "audio_url", None),
    ],
)  # fmt: skip
def test_bad_messages(http, messages, message, param) -> None:
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    expect_error(response, 400, "invalid_request_error", message, param)


def test_bad_media_and_bodies(http, files) -> None:
    param = "messages.0.content.0.video_url.url"

    def post(url: str) -> httpx.Response:
        return http.post("/v1/chat/completions", json=chat_body(url))

    error = expect_error(post("data:video/mp4;base64,AAA$$$"), 400, "invalid_request_error", "not valid base64", param)
    assert error["code"] == "invalid_base64"
    expect_error(post("data:video/mp4,rawbytes"), 400, "invalid_request_error", "must be base64")
    expect_error(post("data:text/plain;base64,aGk="), 400, "invalid_request_error", "'text/plain', not a video")
    error = expect_error(post(data_url(files["noise"])), 400, "invalid_request_error", "^the data: URL video: ")
    assert error["code"] == "invalid_video"
    big = "data:video/mp4;base64," + base64.b64encode(b"\0" * 70_000).decode()
    expect_error(post(big), 413, "invalid_request_error", "larger than the server's limit")
    expect_error(post("recot-video://vid-" + "0" * 24), 404, "not_found_error", "unknown video id", param)
    expect_error(post("recot-video://../../etc/passwd"), 404, "not_found_error", "unknown video id")
    expect_error(post("ftp://example.com/a.mp4"), 400, "invalid_request_error", "unsupported URL scheme 'ftp'")
    expect_error(post("   "), 400, "invalid_request_error", "empty")
    expect_error(http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "invalid_request_error", "not valid JSON")  # fmt: skip
    expect_error(http.post("/v1/chat/completions", json=[1, 2]), 400, "invalid_request_error", "JSON object")
    expect_error(http.get("/v1/chat/completions"), 405, "invalid_request_error", "GET is not allowed")
    expect_error(http.get("/v1/nothing"), 404, "not_found_error", "no such endpoint")


# ----- security -------------------------------------------------------------------------------------------
def test_api_key(server) -> None:
    url = server["url"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        response = httpx.get(url + "/v1/models", headers=headers)
        expect_error(response, 401, "authentication_error", "API key")
        assert response.headers["www-authenticate"] == "Bearer"
    expect_error(httpx.get(url + "/metrics"), 401, "authentication_error", "missing API key")
    expect_error(httpx.post(url + "/v1/videos"), 401, "authentication_error", "missing API key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(url + "/health").status_code == 200 and httpx.get(url + "/").status_code == 200


def test_media_dir_paths(http, files) -> None:
    param = "messages.0.content.0.video_url.url"
    inside = str(files["video"])
    secret = str(files["outside"] / "secret.mp4")  # a readable video: were it read, the request would succeed

    def post(url: str) -> httpx.Response:
        return http.post("/v1/chat/completions", json=chat_body(url))

    for url in ("clips/a.mp4", "./clips/../clips/a.mp4", inside, "file://" + inside, "inside-link.mp4"):
        response = post(url)
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == PHRASE, url
    for url in ("../outside/secret.mp4", "clips/../../outside/secret.mp4", secret, "file://" + secret,
                "file://localhost" + secret, "escape.mp4", "/etc/passwd", "file:///etc/passwd"):  # fmt: skip
        error = expect_error(post(url), 403, "permission_error", "is outside --media-dir", param)
        assert error["code"] == "outside_media_dir", url
    expect_error(post("file://example.com" + inside), 400, "invalid_request_error", "names a host")
    expect_error(post("clips/missing.mp4"), 404, "not_found_error", "no file 'clips/missing.mp4' under --media-dir")
    expect_error(post("clips"), 404, "not_found_error", "no file")
    expect_error(post("clips/a.mp4\0.txt"), 400, "invalid_request_error", "NUL")


def test_remote_urls_are_refused_by_default(http) -> None:
    for url in ("http://127.0.0.1:9/a.mp4", "https://example.com/a.mp4"):
        error = expect_error(http.post("/v1/chat/completions", json=chat_body(url)), 403, "permission_error",
                             "--allow-remote-media")  # fmt: skip
        assert error["code"] == "remote_media_off"


def test_local_paths_off_and_remote_allowed(files, tmp_path) -> None:
    """Without --media-dir no local path is read; with --allow-remote-media a URL is fetched (from loopback)."""
    import http.server
    import threading

    settings = ServeSettings(
        model_name=MODEL, upload_dir=tmp_path / "up", allow_remote_media=True, max_upload_bytes=60_000
    )
    handler_class = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = lambda *a: handler_class(*a, directory=str(files["media"]))  # noqa: E731
    remote = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=remote.serve_forever, daemon=True).start()
    try:
        with (
            live_server(create_app(scripted_chat(tmp_path / "cache"), settings)) as url,
            httpx.Client(base_url=url) as c,
        ):
            for path in ("clips/a.mp4", str(files["video"]), "file://" + str(files["video"])):
                error = expect_error(c.post("/v1/chat/completions", json=chat_body(path)), 403, "permission_error",
                                     "without --media-dir")  # fmt: skip
                assert error["code"] == "media_dir_off"
            port = remote.server_address[1]
            fetched = c.post("/v1/chat/completions", json=chat_body(f"http://127.0.0.1:{port}/clips/a.mp4"))
            assert fetched.status_code == 200 and fetched.json()["choices"][0]["message"]["content"] == PHRASE
            expect_error(c.post("/v1/chat/completions", json=chat_body(f"http://127.0.0.1:{port}/clips/none.mp4")),
                         400, "invalid_request_error", "gave HTTP 404")  # fmt: skip
            assert list((tmp_path / "up" / ".inline").iterdir()) == []  # fetched files are short-lived
    finally:
        remote.shutdown()


def test_metrics(http, files) -> None:
    http.post("/v1/chat/completions", json=chat_body(data_url(files["video"])))
    http.post("/v1/chat/completions", json=chat_body(data_url(files["video"])))
    text = http.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert metric(http, "recot_requests_total", route="/v1/chat/completions", method="POST", status="200") >= 2
    assert metric(http, "recot_requests_total", route="/v1/chat/completions", method="POST", status="400") >= 1
    assert metric(http, "recot_request_seconds_count", route="/v1/chat/completions") >= 2
    assert metric(http, "recot_cache_hits_total", where="memory") >= 1
    assert metric(http, "recot_encode_frames_total") >= 16 and metric(http, "recot_encode_frames_per_second") > 0
    assert metric(http, "recot_answers_total", outcome="completed") >= 2
    assert metric(http, "recot_generated_tokens_total") >= 24
    assert metric(http, "recot_queue_depth", kind="answer") == 0
    assert 'route="/v1/videos/{video_id}"' in text.text or "vid-" not in text.text  # templates, not raw paths


def test_uploads_survive_a_restart(files, tmp_path) -> None:
    settings = ServeSettings(model_name=MODEL, upload_dir=tmp_path / "up", thumbnails=0)
    chat = scripted_chat(tmp_path / "cache")
    with live_server(create_app(chat, settings)) as url, httpx.Client(base_url=url) as c:
        with open(files["video"], "rb") as f:
            video_id = c.post("/v1/videos", files={"file": ("a.mp4", f)}, data={"frames": "8"}).json()["id"]
        assert wait_for_status(c, video_id)["status"] == "ready"
    with live_server(create_app(chat, settings)) as url, httpx.Client(base_url=url) as c:
        record = c.get(f"/v1/videos/{video_id}").json()
        assert record["status"] == "ready" and record["groups"] == 2 and record["thumbnails"] is None
        body = {"model": MODEL, "messages": video_message(f"recot-video://{video_id}")}
        response = c.post("/v1/chat/completions", json=body).json()
        assert response["choices"][0]["message"]["content"] == PHRASE and response["recot"]["cache_hit"]
        expect_error(c.get(f"/v1/videos/{video_id}/thumbnails"), 404, "not_found_error", "no thumbnails")
        assert c.delete(f"/v1/videos/{video_id}").status_code == 200
        assert chat.cache.entries() == []
