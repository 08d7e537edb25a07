"""Shared scaffolding for the model tests: tiny sizes, a synthetic cohort, a two-epoch training run.

Each comparison method's test file (MCAT, MOTCat, CMTA, MoME, CLAM, SNN-Trans, CCL, CFDL, ...) checks,
with the same gene family sizes and bag width, that its network trains through the real loop on a
handful of synthetic patients, that it is seeded and deterministic, and that batching changes nothing.
Those constants, the cohort, the run and the two checks live here once, so that a test file holds
only what is particular to its model. A plain module, not a conftest: tests import what they use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from model.bins import time_bin_edges
from model.data import Patient
from model.train import FoldResult, TrainSettings, train_network

SMALL = [7, 11, 5, 13, 17, 9]  # six small gene families for tiny models
BLCA = [94, 334, 521, 468, 1496, 479]  # TCGA-BLCA's six family sizes (3392 genes): the demo's networks
WSI_DIM = 32  # patch-feature width of the tiny models (the demo's is 1024)
LABELS = (
    torch.tensor([1, 2]),
    torch.tensor([0, 1]),
)  # bins, censorship of a batch of two: what auxiliary_loss is given


def random_inputs(
    modality: str = "genomics",
    n_patches: int = 7,
    batch: int = 1,
    wsi_dim: int = WSI_DIM,
    sizes: Sequence[int] = SMALL,
    seed: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A random (batch, n_patches, wsi_dim) bag and the second modality: one (batch, d) vector per
    gene family, or for ``mri`` one (batch, 2, 16, 32, 32) volume."""
    g = torch.Generator().manual_seed(seed)
    wsi = torch.randn(batch, n_patches, wsi_dim, generator=g)
    if modality == "mri":
        return wsi, [torch.randn(batch, 2, 16, 32, 32, generator=g)]
    return wsi, [torch.randn(batch, d, generator=g) for d in sizes]


def planted_cohort(
    n: int = 90, seed: int = 0, wsi_dim: int = WSI_DIM, families: Sequence[int] = SMALL
) -> list[Patient]:
    """Survival from a latent risk seen by both modalities (bag token means and gene families).

    Bags of 8 to 23 patches; ``families=[]`` gives WSI-only patients (no second-modality tensors).
    """
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    times = rng.exponential(24 * np.exp(-1.5 * risk))
    censor = rng.uniform(0, np.quantile(times, 0.9) * 1.5, size=n)
    censored = (censor < times).astype(int)
    observed = np.minimum(times, censor)
    direction = rng.standard_normal(wsi_dim)
    patients = []
    for i in range(n):
        bag = rng.standard_normal((int(rng.integers(8, 24)), wsi_dim)) + risk[i] * direction
        vectors = [rng.standard_normal(d) + risk[i] for d in families]
        patients.append(
            Patient(
                f"P{i}",
                torch.tensor(bag, dtype=torch.float32),
                [torch.tensor(v, dtype=torch.float32) for v in vectors],
                float(observed[i]),
                int(censored[i]),
            )
        )
    return patients


def train_briefly(
    build: Callable[[], torch.nn.Module], patients: list[Patient], n_train: int, **settings
) -> tuple[FoldResult, list[Patient], list[Patient]]:
    """Two epochs of the real training loop on the first ``n_train`` patients, predicting the rest.

    ``build()`` is called right after ``torch.manual_seed(0)``; the time bins come from the training
    patients only; ``settings`` are further ``TrainSettings`` besides ``epochs=2, selection="last"``.
    Checks what every run must give (two logged epochs with a finite loss, a finite risk for each
    held-out patient) and returns the result, the training and the held-out patients.
    """
    train, held_out = patients[:n_train], patients[n_train:]
    edges = time_bin_edges(np.array([p.time for p in train]), np.array([p.censorship for p in train]))

    def seeded(_offset: int) -> torch.nn.Module:
        torch.manual_seed(0)
        return build()

    result = train_network(seeded, train, held_out, edges, TrainSettings(epochs=2, selection="last", **settings))
    assert len(result.log) == 2 and np.isfinite(result.log["loss"]).all(), result.log
    predictions = result.predictions
    assert len(predictions) == len(held_out) and np.isfinite(predictions["risk"]).all(), predictions
    return result, train, held_out


def assert_survival_contract(out: dict[str, torch.Tensor], batch: int, n_patches: int, exact: bool = True) -> None:
    """What every WSI network outputs: the keys, sigmoid hazards with their survival curve and risk
    (equal, or close where the hazards are averaged over parts), and a patch attention summing to 1."""
    from model.survival import risk_score, survival_curve

    same = torch.equal if exact else torch.allclose
    assert set(out) == {"hazards", "survival", "risk", "attention"}
    assert out["hazards"].shape == (batch, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert same(out["survival"], survival_curve(out["hazards"])) and same(out["risk"], risk_score(out["hazards"]))
    attention = out["attention"]
    assert attention.shape == (batch, n_patches) and (attention >= 0).all()
    assert torch.allclose(attention.sum(-1), torch.ones(batch))


def assert_seeded_and_deterministic(
    build: Callable[[], torch.nn.Module],
    wsi: torch.Tensor,
    second: list[torch.Tensor],
    keys: Iterable[str] | None = None,
) -> None:
    """Two networks built after ``torch.manual_seed(3)`` give the same outputs, each twice in eval mode.

    ``keys``: the outputs compared, bit for bit (default: all of them).
    """
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build().eval()
        with torch.no_grad():
            outputs += [model(wsi, second) for _ in range(2)]
    for key in keys or outputs[0]:
        assert all(torch.equal(outputs[0][key], out[key]) for out in outputs[1:]), key


def assert_batched_equals_single_forwards(
    model: torch.nn.Module, wsi: torch.Tensor, second: list[torch.Tensor], keys: Iterable[str]
) -> None:
    """One forward of the batch gives each patient's forward alone, to 1e-6, for each of ``keys``."""
    with torch.no_grad():
        batched = model(wsi, second)
        singles = [model(wsi[i : i + 1], [x[i : i + 1] for x in second]) for i in range(len(wsi))]
    for key in keys:
        assert (batched[key] - torch.cat([s[key] for s in singles])).abs().max().item() <= 1e-6, key
