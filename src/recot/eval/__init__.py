"""Evaluation: long-video benchmarks scored exactly as published, and an lmms-eval plugin.

- ``recot.eval.api``: items, predictions, the ``Task`` interface;
- ``recot.eval.tasks``: MLVU, Video-MME, LongVideoBench, VNBench, V-NIAH (``make_task``);
- ``recot.eval.extract``: answer extraction, each benchmark's legacy rule and lmms-eval's current one;
- ``recot.eval.runner``: encode each video once, resume, shard, write ``results.json``;
- ``recot.eval.needle``: V-NIAH needles, haystacks and frame-exact insertion;
- ``recot.eval.lmms_plugin``: ``lmms-eval --model recot`` (needs the ``eval`` extra);
- ``recot.eval.commands``: ``recot eval TASK``.
"""
