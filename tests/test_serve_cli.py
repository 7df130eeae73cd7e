"""``recot serve`` on the command line: clean errors for bad options, and a real server process end to end."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine_fixtures import tiny_model_and_processor
from recot.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve-cli")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(root / "tiny-model", tokenizer=processor.tokenizer)
    return root / "tiny-model"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--media-dir", "/no/such/dir"], 2, "--media-dir /no/such/dir is not a directory"),
        (["--port", "70000"], 2, "--port 70000 is not a port number"),
        (["--max-upload-bytes", "lots"], 2, "cannot read cache size 'lots'"),
        (["--max-queue", "0"], 2, "--max-queue: Input should be greater than 0"),
        (["--request-timeout", "-1"], 2, "--request-timeout: Input should be greater than 0"),
        (["--model", "/no/such/model"], 1, "--model /no/such/model is not a directory"),
    ],
)
def test_bad_options(capsys, tmp_path, argv, code, message) -> None:
    assert main(["serve", "--upload-dir", str(tmp_path / "up"), "--cache-dir", str(tmp_path), *argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("recot serve: error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_busy_port_is_a_clean_error(capsys, tmp_path, model_dir) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        argv = ["serve", "--model", str(model_dir), "--port", str(port), "--cache-dir", str(tmp_path)]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} (--host/--port)" in err and "Traceback" not in err


@pytest.mark.slow
def test_serve_process_end_to_end(tmp_path, model_dir) -> None:
    """``recot serve`` in its own process: it says where it listens, serves, and stops cleanly on Ctrl-C."""
    env = {**os.environ, "RECOT_API_KEY": "from-env", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    argv = [sys.executable, "-m", "recot.cli", "serve", "--model", str(model_dir), "--port", "0",
            "--cache-dir", str(tmp_path / "cache"), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "http://" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()
        match = re.search(r"recot serve: tiny-model on (http://127\.0\.0\.1:\d+) ", line)
        assert match, line
        url = match.group(1)
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401  # $RECOT_API_KEY is honoured
        models = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer from-env"}, timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["tiny-model"]
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "<title>recot</title>" in page.text
        assert (tmp_path / "cache" / "serve" / "uploads").is_dir()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
