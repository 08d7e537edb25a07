"""The documented genomics-only TCGA config, run for real on ../shared/data (marked realdata)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT
from workflow.genomics import read_pathways

CONFIG = ROOT / "config" / "examples" / "tcga_blca_genomics.yaml"


@pytest.mark.realdata
@pytest.mark.integration
def test_documented_tcga_blca_config_trains_snn_and_coxph(shared_data, tmp_path):
    """MCAT's BLCA table through the workflow: family sizes, five honest folds per model, both protocols."""
    config = yaml.safe_load(CONFIG.read_text())
    genomics = config["cohorts"]["tcga_blca"]["genomics"]
    tcga = shared_data / "tcga"
    genomics["table"] = str(tcga / "tcga_blca_all_clean.csv.gz")
    genomics["signatures"] = str(tcga / "signatures.csv")
    config["cohorts"]["tcga_blca"]["splits"] = str(tcga / "splits" / "tcga_blca")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]
    command += ["--configfile", str(tmp_path / "config.yaml"), "--directory", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-5000:]

    results = tmp_path / "results" / "tcga_blca"
    patients, matrices, _ = read_pathways(results / "genomics" / "pathways.h5")
    assert len(patients) == 373
    assert [m.shape[1] for m in matrices.values()] == [94, 334, 521, 468, 1496, 479]
    assert not (results / "features").exists() and not (results / "patches").exists()
    table = pd.read_csv(tmp_path / "results" / "evaluation" / "table.tsv", sep="\t")
    honest = table[(table["cohort"] == "tcga_blca") & (table["protocol"] == "honest")].set_index("model")
    assert set(honest.index) == {"snn", "coxph"}
    for model in ("snn", "coxph"):
        cindex = pd.read_csv(results / "evaluation" / model / "cindex.tsv", sep="\t")
        folds = cindex[cindex["protocol"] == "honest"]
        assert len(folds) == 5 and folds["c_index"].between(0.45, 0.8).all(), folds
        assert set(cindex["protocol"]) == {"honest", "best_epoch"}
    coxph = pd.read_csv(results / "evaluation" / "coxph" / "cindex.tsv", sep="\t")
    # the ridge Cox on PCA(10) of the standardised families: 0.619 +- 0.041 (bench/README.md)
    assert coxph.loc[coxph["protocol"] == "honest", "c_index"].mean() == pytest.approx(0.619, abs=0.01)
