"""Helpers shared by the training loops (``recot.pretrain``, ``recot.train``): config files, schedule, metric logs.

* :func:`read_config` reads a YAML or TOML file into a pydantic model; errors
  name the file and the offending fields, as one ``ValueError`` line.
* :func:`warmup_cosine` is the learning-rate multiplier: linear warm-up, then
  cosine decay to a floor.
* :class:`MetricsLog` writes ``metrics.csv`` (and TensorBoard scalars when
  ``tensorboard`` is installed) on the main process; on resume it cuts the CSV
  back to the checkpoint's step, so a resumed run's log equals an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def read_config(path: str | Path, model: type[ConfigT], what: str) -> ConfigT:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file and validate it as ``model``.

    ``what`` names the kind of file in messages ("pre-training config"). Raises
    ``ValueError``: ``cannot read WHAT PATH: reason`` for an unreadable or
    malformed file, ``WHAT PATH: field.path: problem; ...`` for invalid fields.
    """
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            raw = tomllib.loads(text)
        else:
            raw = yaml.safe_load(text) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{what} {path} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{what} {path}: {validation_problems(exc)}") from exc


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; other.field: message``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the base lr at a step: linear warm-up over ``warmup_steps``, then cosine to ``min_lr_ratio``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class MetricsLog:
    """``metrics.csv`` with columns ``fields`` (first one ``step``) and TensorBoard scalars ``TAG/field``.

    Only where ``enabled`` (the main process). With ``start_step > 0`` the
    existing CSV keeps its complete rows up to that step (a row torn by a
    killed process is dropped) and TensorBoard purges later events.
    """

    def __init__(self, out: Path, fields: list[str], start_step: int, enabled: bool, tag: str) -> None:
        self.enabled = enabled
        self.fields = fields
        self.tag = tag
        self.tb = None
        if not enabled:
            return
        self.path = Path(out) / "metrics.csv"
        rows = []
        if start_step > 0 and self.path.exists():
            with self.path.open(newline="") as f:
                for row in csv.DictReader(f):
                    if None in row.values() or None in row or not _is_int(row.get("step")):
                        continue  # torn last line of a killed run
                    if int(row["step"]) <= start_step and (not rows or int(row["step"]) > int(rows[-1]["step"])):
                        rows.append(row)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            print("tensorboard is not installed: metrics go to metrics.csv only (pip install tensorboard)")

    def write(self, row: dict[str, float]) -> None:
        """Append one row (keys: ``fields``)."""
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"{self.tag}/{k}", v, int(row["step"]))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _is_int(text: str | None) -> bool:
    try:
        int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
