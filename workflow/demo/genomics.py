"""Demo genomics in the TCGA/MCAT CSV format, with a small six-family signatures file.

Like the real MCAT tables: a leading unnamed index column, metadata columns, then
``<GENE>_rnaseq`` (z-score-like, occasional large outliers), ``<GENE>_cnv`` (GISTIC -2..2) and
``<GENE>_mut`` (0/1) columns; one row per slide, identical across a patient's slides. A third of
the genes load on the genomic view of the latent risk. A few signature genes have no column at
all, as in real cohorts, so the pathway stage has missing genes to report.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from workflow.demo.design import DemoSpec, item_rng
from workflow.io import atomic_path

# The six MCAT families, with a handful of their real member genes each (some shared between families).
DEMO_SIGNATURES: dict[str, list[str]] = {
    "Tumor Suppressor Genes": ["TP53", "RB1", "PTEN", "CDKN2A", "APC", "BRCA1", "ARID1A", "KDM6A"],
    "Oncogenes": ["MYC", "KRAS", "ERBB2", "PIK3CA", "FGFR3", "CCND1", "MDM2", "HRAS", "E2F3"],
    "Protein Kinases": ["EGFR", "FGFR3", "ERBB2", "CDK4", "AKT1", "MAPK1", "PIK3CA", "MTOR"],
    "Cell Differentiation Markers": ["CD44", "KRT5", "KRT14", "GATA3", "FOXA1", "UPK1B", "CD24"],
    "Transcription Factors": ["GATA3", "FOXA1", "PPARG", "TP63", "STAT3", "SOX2", "E2F3", "ELF3", "KLF5"],
    "Cytokines and Growth Factors": ["TGFB1", "VEGFA", "IL6", "CXCL8", "EGF", "FGF2", "TNF"],
}
# Signature genes deliberately absent from the table (real tables miss some signature genes too).
MISSING_GENES = ("CDKN2A", "MTOR", "CD24")
KINDS = ("rnaseq", "cnv", "mut")


def signatures_frame() -> pd.DataFrame:
    """signatures.csv layout: one column per family, padded with empty cells."""
    longest = max(len(g) for g in DEMO_SIGNATURES.values())
    return pd.DataFrame({f: genes + [None] * (longest - len(genes)) for f, genes in DEMO_SIGNATURES.items()})


def genomics_frame(spec: DemoSpec, truth: pd.DataFrame, slides: pd.DataFrame) -> pd.DataFrame:
    """The MCAT-style table, one row per slide."""
    rng = item_rng(spec.seed, 2)
    genes = sorted({g for family in DEMO_SIGNATURES.values() for g in family} - set(MISSING_GENES))
    n = len(truth)
    view = truth["other_view"].to_numpy()
    loading = np.where(rng.uniform(size=len(genes)) < 1 / 3, rng.choice([-1.0, 1.0], size=len(genes)), 0.0)
    signal = np.outer(view, loading)
    rnaseq = signal + rng.standard_normal((n, len(genes)))
    outliers = rng.uniform(size=rnaseq.shape) < 0.01
    rnaseq[outliers] *= rng.uniform(20, 200, size=int(outliers.sum()))
    cnv = np.clip(np.round(0.8 * signal + 0.7 * rng.standard_normal((n, len(genes)))), -2, 2)
    mut = (rng.uniform(size=(n, len(genes))) < 1 / (1 + np.exp(2.5 - 1.2 * signal))).astype(int)
    values = {f"{g}_rnaseq": np.round(rnaseq[:, k], 4) for k, g in enumerate(genes)}
    values |= {f"{g}_cnv": cnv[:, k].astype(int) for k, g in enumerate(genes)}
    values |= {f"{g}_mut": mut[:, k] for k, g in enumerate(genes)}
    per_patient = pd.DataFrame(values).assign(patient_id=truth["patient_id"].to_numpy())

    meta = slides[["patient_id", "slide_id"]].merge(truth, on="patient_id", how="left")
    table = pd.DataFrame(
        {
            "case_id": meta["patient_id"],
            "slide_id": meta["slide_id"] + ".svs",
            "site": "DT",
            "is_female": meta["is_female"],
            "oncotree_code": "BLCA",
            "age": meta["age"],
            "survival_months": meta["survival_months"],
            "censorship": meta["censorship"],
            "train": 1.0,
        }
    )
    genomic = meta[["patient_id"]].merge(per_patient, on="patient_id", how="left").drop(columns="patient_id")
    return pd.concat([table, genomic], axis=1)


def write_genomics(
    spec: DemoSpec,
    truth: pd.DataFrame,
    slides: pd.DataFrame,
    table_path: str | os.PathLike[str],
    signatures_path: str | os.PathLike[str],
) -> None:
    """Write the MCAT CSV (with its leading unnamed index column) and signatures.csv, atomically."""
    with atomic_path(table_path) as tmp:
        genomics_frame(spec, truth, slides).to_csv(tmp, index=True)
    with atomic_path(signatures_path) as tmp:
        signatures_frame().to_csv(tmp, index=False)
