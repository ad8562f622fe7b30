"""Source adapters: one module per adapter, each registered by name in `base`'s registry."""

from sft_builder.sources.base import (
    Adapter,
    RawRecord,
    Rejected,
    UnparsedRecord,
    adapter_names,
    get_adapter_class,
    make_adapter,
    register,
)

__all__ = ["Adapter", "RawRecord", "Rejected", "UnparsedRecord", "adapter_names", "get_adapter_class",
           "make_adapter", "register"]

# Importing the adapter modules registers them (one adapter per module).
from sft_builder.sources import (  # noqa: E402, F401, I001
    alpaca,
    conversations,
    guanaco,
    oasst1,
    rosetta,
    sharegpt,
    text,
)
