"""ReCoT self-supervised pre-training of the compressor (design in ``docs/recot.md``).

Masked reconstruction (:mod:`.objective`), Semantic-Guided Masking
(:mod:`.masking`), the Dynamic Token Synthesizer (:mod:`.dts`), cached frozen
features (:mod:`.data`), the training loop (:mod:`.train`) and the
``recot pretrain-compressor`` command (:mod:`.commands`).
"""
