"""Seeded design of the embedded demo cohorts: who the patients are, their hidden risk and outcomes.

Survival follows a known proportional-hazards model so that downstream C-indices can be judged
against the truth. The latent risk has a part shared by both modalities and a part specific to
each, mirroring DeReF's decoupling assumption:

    z_shared, z_wsi, z_other ~ N(0, 1)
    risk = (z_shared + 0.6 z_wsi + 0.6 z_other) / sqrt(1.72)        (unit variance)
    T ~ Exponential(lambda0 * exp(beta * risk)),   C ~ Uniform(0, c_max)

``c_max`` is solved for so that the realised censoring rate equals the requested one. The
appearance of each modality is driven by its own view of the risk: ``wsi_view`` and
``other_view`` (genomics or MRI), each (z_shared + z_specific) / sqrt(2).

Everything here is a pure function of the spec, so the Snakefile knows a demo cohort at parse time
(``workflow.demo.sheets``) and the ``demo_cohort`` rule writes the same tables to disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Sequence names of the paper's liver cohort (five-sequence MRI).
LIVER_SEQUENCES = ("arterial", "delay", "hepatobiliary", "t1w", "t2w")
# What each kind of demo can generate; a cohort may take one or two of its kind's modalities.
KIND_MODALITIES = {"tcga": ("wsi", "genomics"), "liver": ("wsi", "mri")}

# Scan resolutions as Aperio reports them for 40x and 20x scans.
MPP_BY_MAGNIFICATION = {40: 0.252, 20: 0.499}
_RISK_WEIGHTS = (1.0, 0.6, 0.6)  # shared, wsi-specific, other-specific
_BASELINE_MEDIAN_MONTHS = 30.0


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of one demo cohort (the ``demo:`` block of a cohort in config.yaml)."""

    kind: str
    seed: int
    n_patients: int = 32
    censoring: float = 0.4
    beta: float = 2.0
    frac_two_slides: float = 0.2
    frac_40x: float = 0.5
    # What is generated: the cohort's modalities, a subset of the kind's (empty: all of them).
    # The patients, their risk and outcomes do not depend on it, so a [genomics] demo writes the
    # same genomics table as the [wsi, genomics] demo of the same seed.
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KIND_MODALITIES:
            raise ValueError(f"demo kind {self.kind!r} is not one of {tuple(KIND_MODALITIES)}")
        offered = KIND_MODALITIES[self.kind]
        object.__setattr__(self, "modalities", tuple(self.modalities) or offered)
        if not set(self.modalities) <= set(offered):
            raise ValueError(
                f"a demo of kind '{self.kind}' has modalities {list(offered)}; "
                f"{list(self.modalities)} is not one or two of them"
            )
        if self.n_patients < 2:
            raise ValueError("a demo cohort needs at least 2 patients")
        if not 0.0 <= self.censoring < 1.0:
            raise ValueError("demo censoring must lie in [0, 1)")

    @property
    def prefix(self) -> str:
        return "DT" if self.kind == "tcga" else "DL"


def item_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (seed, item) so each demo file can be made by its own job."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _censor_bound(event_time: np.ndarray, u: np.ndarray, rate: float) -> float:
    """c_max such that exactly round(rate * n) patients have u * c_max < T (are censored).

    Patient i is censored iff c_max < T_i / u_i, so sorting those thresholds gives the answer.
    """
    k = round(rate * len(event_time))
    if k == 0:
        return math.inf
    thresholds = np.sort(event_time / np.maximum(u, 1e-12))
    n_uncensored = len(thresholds) - k
    return float(thresholds[n_uncensored - 1] * (1 + 1e-9)) if n_uncensored else float(thresholds[0] * 0.5)


def truth_table(spec: DemoSpec) -> pd.DataFrame:
    """One row per patient: latent factors, views, risk, event/censor times and the observed outcome."""
    rng = item_rng(spec.seed, 0)
    n = spec.n_patients
    z = rng.standard_normal((n, 3))
    w = np.asarray(_RISK_WEIGHTS)
    risk = z @ w / math.sqrt(float(w @ w))
    lam0 = math.log(2.0) / _BASELINE_MEDIAN_MONTHS
    event_time = rng.exponential(1.0 / (lam0 * np.exp(spec.beta * risk)))
    u = rng.uniform(size=n)
    c_max = _censor_bound(event_time, u, spec.censoring)
    censor_time = u * c_max
    censored = censor_time < event_time
    observed = np.where(censored, censor_time, event_time)
    n_slides = np.where(rng.uniform(size=n) < spec.frac_two_slides, 2, 1)
    return pd.DataFrame(
        {
            "patient_id": [f"{spec.prefix}-{i + 1:04d}" for i in range(n)],
            "z_shared": z[:, 0],
            "z_wsi": z[:, 1],
            "z_other": z[:, 2],
            "wsi_view": (z[:, 0] + z[:, 1]) / math.sqrt(2.0),
            "other_view": (z[:, 0] + z[:, 2]) / math.sqrt(2.0),
            "risk": risk,
            "event_time": event_time,
            "censor_time": censor_time,
            "survival_months": np.maximum(np.round(observed, 2), 0.01),
            "censorship": censored.astype(int),
            "age": np.round(rng.normal(66, 9, size=n)).astype(int),
            "is_female": (rng.uniform(size=n) < 0.3).astype(int),
            "n_slides": n_slides,
        }
    )


def slides_table(spec: DemoSpec, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per demo slide with its scan magnification and resolution; IDs mimic TCGA's dotted slide names."""
    rng = item_rng(spec.seed, 1)
    rows = []
    for i, row in enumerate(truth.itertuples(index=False)):
        for j in range(int(row.n_slides)):
            code = rng.integers(0, 16**8)
            rows.append(
                {
                    "slide_id": f"{row.patient_id}-01Z-00-DX{j + 1}.{code:08X}",
                    "patient_id": row.patient_id,
                    "slide_index": 2 * i + j,
                    "magnification": 40 if rng.uniform() < spec.frac_40x else 20,
                }
            )
    slides = pd.DataFrame(rows)
    slides["mpp"] = slides["magnification"].map(MPP_BY_MAGNIFICATION)
    return slides
