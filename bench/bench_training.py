"""Benchmark DeReF training: seconds per training patient per epoch on ~2000 x 1024 bags.

    .venv/bin/python bench/bench_training.py [--epochs 2] [--out bench/results/training.tsv]

60 synthetic patients (48 train, 12 held out), BLCA's six family sizes, the reference preset
(authors' DeReF, weighted sampling, poly LR decay, random test-time reorganisation, batch size 1).
Two loops train the same seeded model:

- ``disk``: the authors' way: every step loads the patient's bag from its .pt file and reads the
  loss back to the host (``loss.item()``);
- ``cached``: ``model.train.train_network``: bags moved to the device once, per-step scalars kept there.

Both consume the random generators identically and use the same (fused) Adam, so their per-epoch
losses and held-out predictions must be identical; the script fails otherwise. (The authors use
the per-tensor Adam, which costs more per step; that difference is not part of this comparison.)
Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.bins import assign_bins, time_bin_edges  # noqa: E402
from model.data import Patient  # noqa: E402
from model.deref import DeReF, DeReFOptions  # noqa: E402
from model.survival import nll_survival_loss  # noqa: E402
from model.train import TrainSettings, epoch_lr, epoch_order, predict, train_network  # noqa: E402
from workflow.io import write_tsv  # noqa: E402

BLCA_SIZES = [94, 334, 521, 468, 1496, 479]


def cohort(n: int = 60, patches: int = 2000, dim: int = 1024, seed: int = 0) -> list[Patient]:
    """Patients with bags of about ``patches`` x ``dim`` features and a planted survival signal."""
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    times = rng.exponential(24 * np.exp(-risk)) + 0.5
    censorship = (rng.uniform(size=n) < 0.4).astype(int)
    patients = []
    for i in range(n):
        size = int(rng.integers(int(0.9 * patches), int(1.1 * patches)))
        bag = (rng.standard_normal((size, dim), dtype=np.float32) * 0.5 + 0.1 * risk[i]).astype(np.float32)
        omics = [(rng.standard_normal(d) + 0.3 * risk[i]).astype(np.float32) for d in BLCA_SIZES]
        patients.append(
            Patient(
                f"P{i}",
                torch.from_numpy(bag),
                [torch.from_numpy(o) for o in omics],
                float(times[i]),
                int(censorship[i]),
            )
        )
    return patients


def disk_loop(model, train, held, edges, settings, folder: Path) -> tuple[pd.DataFrame, list[float]]:
    """The authors' loop: the bag read from disk at every step, the loss read back at every step."""
    paths = []
    for p in train:
        paths.append(folder / f"{p.patient_id}.pt")
        torch.save(p.bag, paths[-1])
    rng = np.random.default_rng(settings.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    times = np.array([p.time for p in train])
    censorship = np.array([p.censorship for p in train])
    bins = assign_bins(times, edges)
    losses, seconds = [], []
    for epoch in range(settings.epochs):
        for group in optimiser.param_groups:
            group["lr"] = epoch_lr(settings, epoch)
        model.train()
        start, total = time.perf_counter(), 0.0
        for i in epoch_order(bins, censorship, rng, settings.weighted_sampling):
            bag = torch.load(paths[i], weights_only=True).unsqueeze(0)
            out = model(bag, [x.unsqueeze(0) for x in train[i].second])
            label, censored = torch.tensor([bins[i]]), torch.tensor([censorship[i]])
            loss = nll_survival_loss(out["hazards"], label, censored) + model.auxiliary_loss(
                out, settings, label, censored
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
        losses.append(total / len(train))
        final, _ = predict(model, held, settings)
        seconds.append(time.perf_counter() - start)
    return final, losses, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patches", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.tsv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    patients = cohort(patches=args.patches)
    train, held = patients[:48], patients[48:]
    times = np.array([p.time for p in patients])
    edges = time_bin_edges(times, np.array([p.censorship for p in patients]))  # the reference: whole cohort
    settings = TrainSettings(epochs=args.epochs, scheduler="poly", weighted_sampling=True, seed=1)

    def fresh() -> DeReF:
        torch.manual_seed(1)
        return DeReF(BLCA_SIZES, options=DeReFOptions.reference(), seed=1)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        disk_predictions, disk_losses, disk_seconds = disk_loop(fresh(), train, held, edges, settings, Path(folder))
    rows.append({"loop": "disk (authors'), incl. held-out eval", "seconds_per_epoch": np.mean(disk_seconds)})
    start = time.perf_counter()
    result = train_network(lambda _: fresh(), train, held, edges, settings)
    total = time.perf_counter() - start
    rows.append({"loop": "cached (train_network, incl. held-out eval)", "seconds_per_epoch": total / args.epochs})
    same_loss = np.allclose(result.log["loss"], disk_losses, rtol=1e-6, atol=0)
    same_predictions = np.array_equal(result.predictions["risk"].to_numpy(), disk_predictions["risk"].to_numpy())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = pd.DataFrame(rows).assign(
        seconds_per_patient=lambda t: t["seconds_per_epoch"] / len(train),
        epochs=args.epochs,
        patches=args.patches,
        threads=args.threads,
        identical_outputs=same_loss and same_predictions,
        peak_rss_mb=round(peak),
    )
    write_tsv(table, args.out)
    print(table.to_string(index=False))
    if not (same_loss and same_predictions):
        sys.exit(f"outputs differ: losses {list(result.log['loss'])} vs {disk_losses}")


if __name__ == "__main__":
    main()
