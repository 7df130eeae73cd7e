"""Training the whole model (issue 12; usage in ``docs/training.md``, pruning design in ``docs/pruning.md``).

Conversation data with validation and answer-only labels (:mod:`.data`), the
``recot train`` configuration (:mod:`.config`), stages, LoRA and parameter
groups (:mod:`.stages`), the checkpointed training forward (:mod:`.forward`),
the ``accelerate`` loop (:mod:`.trainer`), video-specific dataset pruning
(:mod:`.prune`) and the ``recot train`` / ``recot prune-data`` commands (:mod:`.commands`).
"""
