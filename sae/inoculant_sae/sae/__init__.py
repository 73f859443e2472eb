"""Sparse autoencoders: one `SAE` class (model.py), and one loader per file format in one table (loaders.py)."""
