"""WSI tiling, CLAM-style: tissue segmentation, a patch grid at a physical resolution, QC output."""
