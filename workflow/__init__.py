"""Importable library for the data stages of the workflow (no Snakemake imports here)."""
