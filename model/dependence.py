"""How much two representations share, and how much a representation says about a label (torch-free).

The DeReF paper compares its shared and exploration features by linear CKA (Fig. 4) and by their
mutual information with the survival label (Table VIII). Both are computed here from saved
features, so the figures and tables can be rebuilt without the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.special import digamma
from sklearn.neighbors import KDTree, NearestNeighbors

from model.metrics import NotComputable


def _matrix(values: np.ndarray) -> np.ndarray:
    """Samples as rows: a vector is one feature."""
    array = np.asarray(values, float)
    return array.reshape(len(array), -1)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same samples.

    ||YᵀX||_F² / (||XᵀX||_F ||YᵀY||_F) on column-centred X (N, Dx) and Y (N, Dy): 1 for X = Y, and
    unchanged by orthogonal transforms and isotropic scaling of either side, so it compares what the
    representations encode rather than their coordinates.
    """
    x, y = _matrix(x), _matrix(y)
    if len(x) != len(y):
        raise ValueError(f"representations of different samples: {len(x)} and {len(y)} rows")
    if len(x) < 2:
        raise ValueError("linear CKA needs at least 2 samples")
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    if not np.any(x) or not np.any(y):
        raise ValueError("linear CKA is undefined for a constant representation")
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def cka_matrix(features: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Pairwise linear CKA of named representations of the same samples (square, symmetric, named)."""
    names = list(features)
    table = pd.DataFrame(np.nan, index=pd.Index(names), columns=pd.Index(names))
    for i, a in enumerate(names):
        for b in names[i:]:
            table.loc[a, b] = table.loc[b, a] = linear_cka(features[a], features[b])
    return table


def _usable(features: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """z-scored non-constant feature columns and label codes, singleton labels dropped (Ross 2014)."""
    x, labels = _matrix(features), np.asarray(labels)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} feature rows but {len(labels)} labels")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = counts[codes] >= 2
    x, codes = x[keep], np.unique(codes[keep], return_inverse=True)[1]
    counts = np.bincount(codes)
    if len(counts) < 2:
        raise NotComputable(f"fewer than 2 labels with at least 2 samples ({len(counts)})")
    std = x.std(axis=0)
    if not np.any(std > 0):
        raise NotComputable("every feature column is constant")
    x = x[:, std > 0]
    return (x - x.mean(axis=0)) / std[std > 0], codes


def mutual_information(features: np.ndarray, labels: np.ndarray, k: int = 3) -> float:
    """Mutual information in nats between continuous features (N, D) and a discrete label.

    The k-nearest-neighbour estimator of Ross (2014, PLoS ONE 9:e87357) with max-norm distances,
    so it applies to multivariate features: I = ψ(N) - ⟨ψ(N_c)⟩ + ψ(k) - ⟨ψ(m)⟩, where d is each
    sample's distance to its k-th nearest neighbour with the same label, N_c that label's count,
    and m the number of other samples (any label) within d. Feature columns are z-scored first
    (constant ones dropped) so that no dimension dominates the distances. As in Ross, samples whose
    label occurs only once have no same-label neighbour and are dropped; a label with at most k
    samples uses k = its count - 1 (ψ(k) becomes the mean of each sample's ψ(k), as scikit-learn's
    implementation of the estimator does), so small held-out folds still give an estimate.
    Estimates below 0 (noise around independence) are clipped to 0. NotComputable when fewer than
    2 labels remain.
    """
    return _estimate(*_usable(features, labels, k), k)


def _estimate(x: np.ndarray, codes: np.ndarray, k: int) -> float:
    radius, neighbours = np.empty(len(x)), np.empty(len(x))
    counts = np.bincount(codes)
    for code in range(codes.max() + 1):
        members = codes == code
        k_code = min(k, counts[code] - 1)
        distances, _ = NearestNeighbors(n_neighbors=k_code, metric="chebyshev").fit(x[members]).kneighbors()
        radius[members], neighbours[members] = distances[:, -1], k_code
    within = KDTree(x, metric="chebyshev").query_radius(x, radius, count_only=True) - 1  # all within d, not self
    estimate = digamma(len(x)) - digamma(counts[codes]).mean() + digamma(neighbours).mean() - digamma(within).mean()
    return float(max(estimate, 0.0))


def normalised_mutual_information(features: np.ndarray, labels: np.ndarray, k: int = 3) -> float:
    """Mutual information over the entropy of the labels it used (nats / nats), clipped to [0, 1].

    Dividing by H(label) makes cohorts with different label distributions comparable: 1 means the
    features determine the label. The estimator's bias can carry it slightly above 1, hence the clip.
    """
    x, codes = _usable(features, labels, k)
    p = np.bincount(codes) / len(codes)
    return float(min(_estimate(x, codes, k) / -(p * np.log(p)).sum(), 1.0))
