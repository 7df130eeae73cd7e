"""The benchmarks ``recot eval`` runs, by task name (modules are imported when a task is made)."""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, class, constructor arguments)
_REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mlvu-dev": ("mlvu", "MLVU", {"split": "dev"}),
    "mlvu-test": ("mlvu", "MLVU", {"split": "test"}),
    **{
        f"videomme{'-' + d if d else ''}{'-w-subtitle' if s else ''}": (
            "videomme",
            "VideoMME",
            {"duration": d, "subtitles": s},
        )
        for s in (False, True)
        for d in (None, "short", "medium", "long")
    },
    "longvideobench-val": ("longvideobench", "LongVideoBenchVal", {}),
    "vnbench": ("vnbench", "VNBench", {}),
    "vniah": ("vniah", "VNIAH", {}),
}

TASK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def make_task(name: str, **options: Any):
    """The :class:`recot.eval.api.Task` called ``name``; ``options`` go to its constructor (V-NIAH's grid)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(TASK_NAMES)}")
    module, cls, arguments = _REGISTRY[name]
    task_class = getattr(importlib.import_module(f"recot.eval.tasks.{module}"), cls)
    return task_class(**arguments, **options)
