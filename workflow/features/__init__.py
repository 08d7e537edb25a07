"""Patch features: frozen encoders over the tiling stage's patches, one HDF5 per slide."""
