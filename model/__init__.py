"""Importable library for the learning side: survival models, training per fold and evaluation.

Kept free of Snakemake imports so models can be trained and tested from notebooks and pytest.
"""
