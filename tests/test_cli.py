"""The ``recot`` command itself: fast start-up, help texts, exit codes, warnings, closed pipes, interrupts."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import recot
from recot.cli import build_parser, main

SRC = Path(recot.__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "av", "numpy", "PIL", "safetensors"}


def _subprocess(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120, **kwargs)


def _imported(importtime_log: str) -> set[str]:
    """Top-level packages named in a ``python -X importtime`` log ("import time: self | cumulative | name")."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["ask", "--help"], ["video", "frames", "--help"],
                                  ["cache", "ls", "--help"], ["pretrain-compressor", "--help"]])  # fmt: skip
def test_help_and_version_import_no_heavy_package(argv) -> None:
    result = _subprocess("-X", "importtime", "-m", "recot.cli", *argv)
    assert result.returncode == 0, result.stderr
    imported = _imported(result.stderr)
    assert "recot" in imported  # the log is read correctly
    assert imported.isdisjoint(HEAVY), sorted(imported & HEAVY)
    if argv == ["--version"]:
        assert result.stdout == f"recot {recot.__version__}\n"


def test_import_recot_is_light_and_names_resolve_on_use() -> None:
    result = _subprocess("-X", "importtime", "-c", "import recot, recot.engine, recot.video")
    assert result.returncode == 0 and _imported(result.stderr).isdisjoint(HEAVY)
    from recot import VideoChat, VideoXLProConfig
    from recot.video import probe

    assert VideoChat.__module__ == "recot.engine.chat" and VideoXLProConfig.__module__ == "recot.config"
    assert callable(probe) and probe.__module__ == "recot.video.probe"  # the function, not the module of that name
    assert "VideoChat" in dir(recot)
    with pytest.raises(AttributeError, match="module 'recot' has no attribute 'Nope'"):
        recot.Nope  # noqa: B018


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_option_has_help_and_says_its_default() -> None:
    for parser in _parsers(build_parser()):
        assert "``" not in (parser.description or ""), parser.prog  # plain text, not reST
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog} {action.dest} has no help"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in action.help, f"{parser.prog} {action.option_strings[0]} does not say its default"


def test_ask_help_is_short_and_shows_defaults(capsys) -> None:
    assert main(["ask", "--help"]) == 0
    out = capsys.readouterr().out
    description = out.split("positional arguments:")[0]
    assert "Answer questions about a video" in description and len(description.splitlines()) < 16
    out = " ".join(out.split())  # help lines are wrapped to the terminal width
    assert "longest answer, in tokens (default: 128)" in out
    assert "sampling temperature, with --do-sample (default: 1.0)" in out
    assert "nucleus sampling mass, with --do-sample (default: 1.0)" in out


def test_video_backend_choices_match_the_decoder() -> None:
    from recot.video.backends import BACKENDS
    from recot.video.commands import BACKEND_CHOICES

    assert BACKEND_CHOICES == BACKENDS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frames", "0"], "argument --frames: must be >= 1, got 0"),
        (["--fps", "-2"], "argument --fps: must be > 0, got -2.0"),
        (["--frames", "4", "--max-frames", "0"], "argument --max-frames: must be >= 1, got 0"),
        (["--frames", "4", "--size", "0"], "argument --size: must be >= 1, got 0"),
        (["--frames", "4", "--quality", "101"], "argument --quality: must be between 1 and 100, got 101"),
        (["--frames", "4", "--start", "3", "--end", "1"], "--end must be after --start, got --start 3 --end 1"),
        (["--frames", "4", "--backend", "decord"],
         "argument --backend: invalid choice: 'decord' (choose from 'auto', 'pyav', 'torchcodec')"),
    ],
)
def test_video_frames_flag_errors_exit_2(tmp_path, capsys, argv, message) -> None:
    code = main(["video", "frames", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1] == f"recot video frames: error: {message}"
    assert not (tmp_path / "out").exists()


def test_missing_command_argument_prints_usage(capsys) -> None:
    assert main([]) == 2 and "usage: recot" in capsys.readouterr().out
    assert main(["video", "info"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "recot video info: error: the following arguments are required: file"


def _fake_cache_ls(monkeypatch, body) -> None:
    import recot.engine.commands as commands

    monkeypatch.setattr(commands, "run_cache_ls", body)


def test_warnings_print_as_command_warnings_and_the_hook_is_removed_after(monkeypatch, capsys) -> None:
    def body(args):
        warnings.warn("something is odd", UserWarning, stacklevel=1)
        return 0

    _fake_cache_ls(monkeypatch, body)
    before = warnings.showwarning
    assert main(["cache", "ls"]) == 0
    assert capsys.readouterr().err == "recot cache ls: warning: something is odd\n"
    assert warnings.showwarning is before


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    def body(args):
        raise KeyboardInterrupt

    _fake_cache_ls(monkeypatch, body)
    assert main(["cache", "ls"]) == 130
    assert capsys.readouterr().err == "\nrecot cache ls: interrupted\n"


def test_closed_stdout_ends_quietly(tmp_path) -> None:
    from recot.engine.cache import EncodingCache
    from recot.model.videoxl_pro import EncodedVideo

    cache = EncodingCache(tmp_path, "1GB")
    for i in range(50):
        cache.store(f"{i:040x}", EncodedVideo(torch.zeros(1, 2, 3), torch.zeros(1)), {"video": "v.mp4", "frames": 4})
    command = [sys.executable, "-m", "recot.cli", "cache", "ls", "--json", "--cache-dir", str(tmp_path)]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before anything is written, like `| head` after its first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert err == ""
    # And the shell pipeline of the issue, which may or may not hit the closed pipe: never a traceback.
    shell = subprocess.run(shlex.join(command) + " | head -1", shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert shell.returncode == 0 and shell.stderr == "" and shell.stdout.count("\n") == 1


def test_video_frames_unwritable_output_is_an_input_error(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["video", "frames", str(tmp_path / "v.mp4"), "--out", str(blocker / "out"), "--frames", "2"])
    assert code == 1
    assert capsys.readouterr().err == f"recot video frames: error: --out {blocker / 'out'}: cannot write there: File exists\n"
