"""The lmms-eval model ``recot``: ``lmms-eval --model recot --model_args pretrained=DIR,max_frames_num=64,fps=1``.

Registered through lmms-eval's documented plugin mechanism, an entry point in
the ``lmms_eval.models`` group (``recot = "recot.eval.lmms_plugin:MANIFEST"`` in
recot's ``pyproject.toml``), so no fork of lmms-eval is needed. Tested with
lmms-eval 0.7.3 (the ``eval`` extra).

``RecotLMM`` is a "simple" lmms-eval model: each request brings the task's
prompt and a ``doc_to_visual`` giving ``[video_path]``. Requests are grouped by
video, each video is encoded once (through recot's encode cache, so a rerun or
another task on the same videos reuses it) and every question about it is
answered with greedy decoding (sampling when the task asks for
``do_sample``/``temperature > 0``). The output is cut at the task's ``until``
strings. Multiple-choice video tasks in lmms-eval are generation tasks, so
``loglikelihood`` is not implemented.

Model arguments: ``pretrained`` (checkpoint directory; default the default
model, trained on synthetic QA only), ``max_frames_num`` and ``fps`` (with ``fps``: ``fps`` frames a
second, capped uniformly at ``max_frames_num``, as lmms-eval's ``llava_vid``;
without: ``max_frames_num`` frames uniformly; neither: recot's default, 1 fps up
to 4,096 frames), ``keep_ratio``, ``max_visual_tokens``, ``dtype``, ``device``
and ``cache_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from tqdm.auto import tqdm

MANIFEST = ModelManifest(
    model_id="recot", simple_class_path="recot.eval.lmms_plugin.RecotLMM", aliases=("videoxlpro_recot",)
)


def _optional(value: Any, kind: type) -> Any:
    """A model_args value as ``kind``; None for absent/"none"/""."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return kind(value)


def _visual_token_limit(value: Any) -> int | str:
    """``max_visual_tokens`` as ``recot ask --max-visual-tokens`` reads it: an integer >= 1 or ``all``."""
    from recot.model.selector import parse_visual_token_limit

    try:
        return parse_visual_token_limit(str(value))
    except ValueError as e:
        raise ValueError(f"max_visual_tokens: {e}") from None


class RecotLMM(lmms):
    """Video-XL-Pro through recot's ``VideoChat``, for lmms-eval generation tasks."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        max_frames_num: int | str | None = None,
        fps: float | str | None = None,
        keep_ratio: float | str | None = None,
        max_visual_tokens: int | str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        cache_dir: str | None = None,
        batch_size: int | str | None = 1,
        **unused: Any,
    ) -> None:
        super().__init__()
        from recot.engine import EncodingCache, FrameSampling, VideoChat, default_model_dir

        if _optional(batch_size, int) not in (None, 1):
            raise ValueError(f"recot answers one question at a time; got batch_size={batch_size}")
        self._world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._rank = int(os.environ.get("RANK", "0"))
        if device == "cuda" and self._world_size > 1:
            device = f"cuda:{os.environ.get('LOCAL_RANK', self._rank)}"
        model_dir = Path(pretrained) if pretrained else default_model_dir(cache_dir)
        self.chat = VideoChat.from_pretrained(model_dir, dtype=dtype, device=device, cache=EncodingCache(cache_dir))
        frames, rate = _optional(max_frames_num, int), _optional(fps, float)
        self.sampling = (
            FrameSampling(fps=rate, max_frames=frames) if rate is not None else FrameSampling(num_frames=frames)
        ).resolved()
        self.keep_ratio = _optional(keep_ratio, float)
        self.max_visual_tokens = _optional(max_visual_tokens, _visual_token_limit)

    @property
    def device(self) -> Any:
        return self.chat.model.device

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answer each request about its video; each video is encoded once."""
        from recot.engine import GenerationOptions

        by_video: dict[str, list[int]] = {}
        for position, request in enumerate(requests):
            by_video.setdefault(self._video_of(request), []).append(position)
        outputs: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="recot", disable=self._rank != 0)
        for video, positions in by_video.items():
            encoding = self.chat.encode(video, self.sampling)
            for position in positions:
                context, gen_kwargs = requests[position].args[0], dict(requests[position].args[1] or {})
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                temperature = float(gen_kwargs.get("temperature") or 0.0)
                sample = bool(gen_kwargs.get("do_sample")) and temperature > 0
                options = GenerationOptions(
                    keep_ratio=self.keep_ratio,
                    max_visual_tokens=self.max_visual_tokens,
                    max_new_tokens=int(gen_kwargs.get("max_new_tokens") or 128),
                    do_sample=sample,
                    temperature=temperature if sample else 1.0,
                    top_p=float(gen_kwargs.get("top_p") or 1.0),
                )
                text = self.chat.ask(encoding, context, options).answer
                for stop in until:
                    if stop:
                        text = text.split(stop)[0]
                outputs[position] = text
                bar.update(1)
        bar.close()
        return [o if o is not None else "" for o in outputs]

    def _video_of(self, request: Instance) -> str:
        """The one video file of a simple generate_until request (``doc_to_visual(doc)`` -> ``[path]``)."""
        _, _, doc_to_visual, doc_id, task, split = request.args[:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not visuals or len(visuals) != 1 or not isinstance(visuals[0], (str, os.PathLike)):
            raise ValueError(
                f"recot answers about one video file per question; task {task} doc {doc_id} gave {visuals!r}"[:300]
            )
        return str(visuals[0])

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "recot's lmms-eval model answers by generation only; use generate_until tasks "
            "(the long-video benchmarks MLVU, Video-MME, LongVideoBench all are)"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("recot's lmms-eval model does not support multi-round generation")
