"""Pretraining data (CrystalCoder stages 1-3): read, select, tokenize, pack, FIM, write HDF5; local or Ray."""
