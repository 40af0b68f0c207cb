"""Distillation: students trained on a teacher's soft targets (``sst2 distill``, ``sst2.distill``)."""
