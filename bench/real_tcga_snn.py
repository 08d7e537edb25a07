"""Real-data check: the genomics-only SNN on TCGA-BLCA with MCAT's five splits, honest protocol.

Usage: .venv/bin/python bench/real_tcga_snn.py [--data ../shared/data] [--epochs 30]
Writes bench/results/real_tcga_blca_snn.tsv (per fold: honest last-epoch C-index and the
optimistic best-epoch C-index) and prints mean ± std next to the paper's 0.618 ± 0.022.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from model.data import genomics_only_data  # noqa: E402
from model.evaluate import fold_cindex, summarise  # noqa: E402
from model.fold import run_fold, training_defaults  # noqa: E402
from model.splits import read_mcat_split  # noqa: E402
from workflow.io import write_tsv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_tcga_blca_snn.tsv")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tcga = args.data / "tcga"
    data = genomics_only_data(tcga / "tcga_blca_all_clean.csv.gz", tcga / "signatures.csv")
    print(f"{len(data.outcomes)} patients, omic sizes {list(data.omic_sizes)}")
    settings = training_defaults() | {"epochs": args.epochs, "device": "cpu"}
    honest, optimistic = [], []
    for fold in range(5):
        train, held = read_mcat_split(tcga / "splits" / "tcga_blca" / f"splits_{fold}.csv")
        result, meta = run_fold(data, "snn", fold, train, held, settings)
        honest.append(result.predictions.assign(fold=fold, epoch=result.selected_epoch))
        optimistic.append(result.best_epoch_predictions.assign(fold=fold, epoch=result.best_epoch))
        print(f"fold {fold}: last epoch C {result.log['held_out_c_index'].iloc[-1]:.3f} ({meta['seconds']:.0f} s)")
    cindex = fold_cindex({"honest": honest, "best_epoch": optimistic})
    write_tsv(cindex, args.out)
    for row in summarise(cindex).itertuples():
        print(f"{row.protocol}: {row.mean:.3f} ± {row.std:.3f} (paper SNN 0.618 ± 0.022; ridge Cox 0.623 ± 0.031)")


if __name__ == "__main__":
    pd.set_option("display.width", 120)
    main()
