"""The selector's per-group scores and kept tokens, for the page's "where the answer came from" heatmap.

This is the one place the server reaches into the model's intermediates: a
forward hook on ``model.selector`` records its :class:`recot.model.selector.Selection`
(``scores`` (V,) in [0, 1] for the V visual tokens in time order, ``kept_visual``
(k,) their kept indices) for the question being answered, so the heatmap shows
exactly the selection the answer used, at no extra cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from recot.model.videoxl_pro import VideoXLPro
from recot.serve.schemas import SelectionMap


@contextmanager
def capture_selection(
    model: VideoXLPro, timestamps: torch.Tensor, on_selection: Callable[[SelectionMap], None]
) -> Iterator[None]:
    """Within the block, each selector call on ``model`` is summarised per group and passed to ``on_selection``.

    ``timestamps`` (G,) are the group times of the video being asked about;
    the selector's V scores are the G groups' P tokens each, in order.
    """

    def hook(module: torch.nn.Module, args: tuple, selection: object) -> None:
        on_selection(group_selection(selection.scores, selection.kept_visual, timestamps))

    handle = model.selector.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def group_selection(scores: torch.Tensor, kept_visual: torch.Tensor, timestamps: torch.Tensor) -> SelectionMap:
    """(V,) token scores and (k,) kept token indices of G groups -> per-group mean score and kept count."""
    groups = int(timestamps.numel())
    if groups == 0 or scores.numel() % groups:
        raise ValueError(f"{scores.numel()} visual token scores do not split into {groups} groups")
    per_group = scores.numel() // groups
    kept = torch.zeros(scores.numel(), dtype=torch.long)
    kept[kept_visual.detach().cpu().long()] = 1
    return SelectionMap(
        groups=groups,
        tokens_per_group=per_group,
        timestamps=[round(t, 3) for t in timestamps.double().tolist()],
        scores=[round(s, 4) for s in scores.detach().float().cpu().view(groups, per_group).mean(1).tolist()],
        kept=kept.view(groups, per_group).sum(1).tolist(),
    )
