"""Generator of the embedded demo cohorts (TCGA-like WSI + genomics, liver-like WSI + MRI)."""
