"""The README's Python snippets run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section titled ``section``."""
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_the_python_api_section_has_its_two_snippets() -> None:
    blocks = python_blocks("Python API")
    assert len(blocks) == 2
    assert 'VideoChat.from_pretrained("default")' in blocks[0] and "default_model_dir()" in blocks[1]


@pytest.mark.slow
def test_python_api_snippets_run_as_written(tmp_path) -> None:
    """Both snippets, in order, in one fresh interpreter in an empty folder (the second reads the first's video)."""
    script = "\n".join(python_blocks("Python API"))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PATH": "/usr/bin:/bin",
           "RECOT_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sample.mp4").is_file()
    assert not (tmp_path / "cache" / "models").exists()  # the default model ships: nothing is built
    assert len(list((tmp_path / "cache" / "encoded").glob("*.safetensors"))) == 1  # encoded once, then reused
    assert "encode=0.0" in result.stdout  # questions about an encoding pay nothing to encode
    lines = result.stdout.splitlines()
    answered = [line.split(" | ")[:2] for line in lines if "| truth:" in line]
    assert len(answered) == 3 and all(answer == truth.removeprefix("truth: ") for answer, truth in answered), lines
    assert lines[-1] == "sunset"  # the second snippet, the model called directly
