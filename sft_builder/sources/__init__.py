"""Source adapters: one module per adapter, each registered by name in `base`'s registry."""

from sft_builder.sources.base import (
    Adapter,
    RawRecord,
    Rejected,
    adapter_names,
    get_adapter_class,
    make_adapter,
    register,
)

__all__ = ["Adapter", "RawRecord", "Rejected", "adapter_names", "get_adapter_class", "make_adapter", "register"]

# Built-in adapters register themselves on import (added by each adapter module).
