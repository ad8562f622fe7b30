"""The floor under both wings: errors, records, config, readers, tokenizer, HDF5 format, atomic writes.

Nothing here imports `sft_builder` or `pretrain`.
"""
