"""Record-by-record build steps (clean, language, quality, decontaminate) and their shared step interface."""

from sft_builder.steps.base import Drop, FilterStep, Item, PerSource, Step, chain, reject

__all__ = ["Drop", "FilterStep", "Item", "PerSource", "Step", "chain", "reject"]
