"""The Snakefile as a user runs it: lint, format, a dry run of the full DAG, a real run of the demo."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
import safetensors.torch
import tifffile
import torch
import yaml

from tests.conftest import ROOT
from workflow.genomics import read_pathways

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def run(args, cwd, check=True):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


def test_snakemake_lint_is_clean():
    done = run([*SNAKEMAKE, "--lint"], ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_snakefmt_check_is_clean():
    done = run([sys.executable, "-m", "snakefmt", "--check", "."], ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dry_run_of_the_full_dag():
    done = run([*SNAKEMAKE, "-n", "--forceall", "--quiet", "rules"], ROOT)
    counts = dict(
        line.split() for line in done.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    from workflow.cohort import load_cohorts

    cohorts = load_cohorts(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    n_slides = sum(len(c.slide_ids) for c in cohorts.values())
    assert int(counts["demo_cohort"]) == 1
    assert int(counts["inventory_slides"]) == len(cohorts)
    assert int(counts["tile_slide"]) == n_slides
    assert int(counts["summarize_tiling"]) == len(cohorts)
    assert int(counts["extract_features"]) == n_slides
    assert int(counts["summarize_features"]) == len(cohorts)
    assert int(counts["build_pathways"]) == sum("genomics" in c.modalities for c in cohorts.values())
    assert int(counts["crop_mri"]) == sum(len(c.patient_ids) for c in cohorts.values() if c.mri is not None)
    assert int(counts["gather_mri"]) == sum("mri" in c.modalities for c in cohorts.values())
    from model.registry import applies

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = {
        name: [m for m in (spec.get("models") or config["training"]["models"]) if applies(m, set(spec["modalities"]))]
        for name, spec in config["cohorts"].items()
    }
    assert models["demo_tcga"] == ["deref", "hdmoe", "snn", "abmil", "transmil", "concat_mlp"]
    assert int(counts["make_splits"]) == len(cohorts)
    assert int(counts["train_fold"]) == config["training"]["folds"] * sum(len(m) for m in models.values())
    assert int(counts["evaluate_model"]) == sum(len(m) for m in models.values())
    assert int(counts["summary_table"]) == 1


def tiny_config(tmp_path, n_patients=6):
    config = {
        "cohorts": {
            "tiny_tcga": {
                "modalities": ["wsi", "genomics"],
                "demo": {"kind": "tcga", "seed": 5, "n_patients": n_patients, "frac_two_slides": 0.4},
            },
            "tiny_liver": {
                "modalities": ["wsi", "mri"],
                "demo": {"kind": "liver", "seed": 6, "n_patients": n_patients},
            },
        },
        "features": {"weights": "random", "write_clam_pt": True},
        "mri_roi": {"roi_shape": [16, 48, 48]},
        "training": {
            "models": ["deref", "snn", "mri_resnet"],
            "folds": 2,
            "epochs": 1,
            "n_bins": 2,
            "bins": "cohort",
            "threads": 1,
        },
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return config


@pytest.mark.integration
def test_demo_run_makes_real_cohorts(tmp_path):
    tiny_config(tmp_path)
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path)], tmp_path)

    assert (tmp_path / "logs" / "demo_cohort.log").is_file()
    for cohort, kind in (("tiny_tcga", "tcga"), ("tiny_liver", "liver")):
        root = tmp_path / "resources" / "demo" / cohort
        demo_slides = pd.read_csv(root / "slides.tsv", sep="\t", dtype=str)
        truth = pd.read_csv(root / "truth.tsv", sep="\t", dtype={"patient_id": str})
        inventory = pd.read_csv(
            tmp_path / "results" / cohort / "slides" / "inventory.tsv", sep="\t", dtype={"slide_id": str}
        ).set_index("slide_id")
        assert set(inventory.index) == set(demo_slides["slide_id"])
        assert (inventory["problem"].fillna("") == "").all()
        for row in demo_slides.itertuples():
            with openslide.OpenSlide(root / "slides" / f"{row.slide_id}.svs") as slide:
                assert float(slide.properties["openslide.mpp-x"]) == float(row.mpp)
                assert int(slide.properties["openslide.objective-power"]) == int(row.magnification)
                assert slide.level_count == 3
            assert inventory.loc[row.slide_id, "mpp"] == pytest.approx(float(row.mpp))
        tiling = pd.read_csv(
            tmp_path / "results" / cohort / "patches" / "tiling_summary.tsv", sep="\t", dtype={"slide_id": str}
        )
        assert sorted(tiling["slide_id"]) == sorted(demo_slides["slide_id"])
        assert (tiling["status"] == "ok").all() and (tiling["patches"] > 10).all()
        assert set(tiling["read_size"]) <= {256, 512}
        for slide_id in tiling["slide_id"]:
            for picture in ("mask", "grid"):
                assert (
                    tmp_path / "results" / cohort / "patches" / "qc" / f"{slide_id}.{picture}.jpg"
                ).stat().st_size > 1000
            assert (tmp_path / "benchmarks" / "tile_slide" / cohort / f"{slide_id}.tsv").is_file()
        features_dir = tmp_path / "results" / cohort / "features" / "resnet50_trunc"
        features = pd.read_csv(features_dir / "features_summary.tsv", sep="\t", dtype={"slide_id": str}).set_index(
            "slide_id"
        )
        assert (features["status"] == "ok").all() and (features["weights_source"].str.startswith("random")).all()
        assert features["n_patches"].to_dict() == tiling.set_index("slide_id")["patches"].to_dict()
        for slide_id in tiling["slide_id"]:
            pt = torch.load(features_dir / "pt_files" / f"{slide_id}.pt", weights_only=True)
            assert pt.shape == (features.loc[slide_id, "n_patches"], 1024)
        assert (
            "RANDOM weights" in (tmp_path / "logs" / "summarize_features" / cohort / "resnet50_trunc.log").read_text()
        )
        if kind == "tcga":
            table = pd.read_csv(root / "genomics.csv", index_col=0)
            assert sorted(table["case_id"]) == sorted(demo_slides["patient_id"])
            patients, matrices, _ = read_pathways(tmp_path / "results" / cohort / "genomics" / "pathways.h5")
            assert patients == list(truth["patient_id"]) and len(matrices) == 6
            families = pd.read_csv(tmp_path / "results" / cohort / "genomics" / "families.tsv", sep="\t")
            assert (families["columns"] > 0).all()
        else:
            for patient in truth["patient_id"]:
                assert len(list((root / "mri" / patient).glob("*.nii.gz"))) == 6
                assert (tmp_path / "results" / cohort / "mri" / "qc" / f"{patient}.png").is_file()
            with h5py.File(tmp_path / "results" / cohort / "mri" / "roi.h5") as h5:
                assert h5["channels"].shape == (len(truth), 5, 16, 48, 48) and h5["present"][:].all()
        for model in ("deref", "snn") if kind == "tcga" else ("deref", "mri_resnet"):
            held = []
            for fold in (0, 1):
                out = tmp_path / "results" / cohort / "models" / model / f"fold_{fold}"
                predictions = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"patient_id": str})
                held += list(predictions["patient_id"])
                assert len(safetensors.torch.load_file(out / "weights.safetensors")) > 0
                assert len(pd.read_csv(out / "log.tsv", sep="\t")) == 1
                if model == "deref":
                    assert {"gate_0", "gate_3"} <= set(predictions.columns)
                    with h5py.File(out / "details.h5") as h5:
                        first = h5[predictions["patient_id"].iloc[0]]
                        assert {"attention", "coords", "slide_id", "shared", "explore"} <= set(first)
            assert sorted(held) == sorted(truth["patient_id"])  # every patient held out exactly once
            evaluation = tmp_path / "results" / cohort / "evaluation" / model
            cindex = pd.read_csv(evaluation / "cindex.tsv", sep="\t")
            assert set(cindex["protocol"]) == {"honest", "best_epoch"} and len(cindex) == 4
            for figure in ("km.png", "km.pdf", "cindex_curves.png", "cindex_curves.pdf"):
                assert (evaluation / figure).stat().st_size > 5_000
    table = pd.read_csv(tmp_path / "results" / "evaluation" / "table.tsv", sep="\t")
    assert len(table) == 2 * 4 and set(table["cohort"]) == {"tiny_tcga", "tiny_liver"}
    markdown = (tmp_path / "results" / "evaluation" / "table.md").read_text()
    assert "| DeReF |" in markdown and "optimistic" in markdown

    again = run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), "-n"], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    run([*SNAKEMAKE, "--directory", str(tmp_path), "--report", str(tmp_path / "report.zip")], tmp_path)
    assert (tmp_path / "report.zip").stat().st_size > 10_000


def test_bad_user_sheet_stops_the_run_with_its_message(tmp_path):
    (tmp_path / "config").mkdir()
    pd.DataFrame(
        [
            {"patient_id": "P1", "survival_months": 3.0, "censorship": 0},
            {"patient_id": "P1", "survival_months": 5.0, "censorship": 1},
        ]
    ).to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    pd.DataFrame([{"slide_id": "S1", "patient_id": "P1", "path": "s.svs"}]).to_csv(
        tmp_path / "s.tsv", sep="\t", index=False
    )
    config = {
        "cohorts": {
            "mine": {
                "modalities": ["wsi", "genomics"],
                "patients": "p.tsv",
                "slides": "s.tsv",
                "genomics": {"table": "t.csv", "signatures": "g.csv"},
            }
        }
    }
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path, check=False)
    assert done.returncode != 0
    assert "patients sheet p.tsv: duplicated patient_id: line 2 (P1), line 3 (P1)" in done.stdout + done.stderr


def test_unknown_config_key_is_rejected(tmp_path):
    config = tiny_config(tmp_path)
    config["cohorts"]["tiny_tcga"]["demo"]["sede"] = 1
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path, check=False)
    assert done.returncode != 0 and "sede" in done.stdout + done.stderr


def user_cohort(tmp_path, on_error):
    """A user cohort with one good slide and one plain (non-pyramidal) TIFF."""
    from workflow.demo import tissue
    from workflow.demo.design import item_rng

    rng = item_rng(3, 0)
    layout = tissue.random_layout(rng)
    tissue.write_slide(tmp_path / "good.svs", layout, tissue.appearance(layout, 0.0, rng), 0.5, 20)
    tifffile.imwrite(tmp_path / "plain.tif", np.full((400, 500, 3), 220, np.uint8), photometric="rgb")
    pd.DataFrame({"patient_id": ["P1", "P2"], "survival_months": [10.0, 20.0], "censorship": [0, 1]}).to_csv(
        tmp_path / "patients.tsv", sep="\t", index=False
    )
    pd.DataFrame({"slide_id": ["good", "plain"], "patient_id": ["P1", "P2"], "path": ["good.svs", "plain.tif"]}).to_csv(
        tmp_path / "slides.tsv", sep="\t", index=False
    )
    pd.DataFrame({"case_id": ["P1", "P2"], "slide_id": ["good.svs", "plain.tif"], "TP53_rnaseq": [0.1, -0.2]}).to_csv(
        tmp_path / "genomics.csv"
    )
    pd.DataFrame({"Tumor Suppressor Genes": ["TP53"]}).to_csv(tmp_path / "signatures.csv", index=False)
    cohort = {
        "modalities": ["wsi", "genomics"],
        "patients": "patients.tsv",
        "slides": "slides.tsv",
        "genomics": {"table": "genomics.csv", "signatures": "signatures.csv"},
    }
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(
        yaml.safe_dump(
            {"cohorts": {"mine": cohort}, "tiling": {"on_error": on_error}, "features": {"weights": "random"}}
        )
    )


@pytest.mark.integration
def test_bad_slide_is_excluded_or_stops_the_run(tmp_path):
    user_cohort(tmp_path, "exclude")
    target = "results/mine/patches/tiling_summary.tsv"
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), target], tmp_path)
    summary = pd.read_csv(tmp_path / target, sep="\t").set_index("slide_id")
    assert summary.loc["good", "status"] == "ok" and summary.loc["good", "patches"] > 10
    assert summary.loc["plain", "status"] == "excluded" and "non-pyramidal" in summary.loc["plain", "reason"]
    features = "results/mine/features/resnet50_trunc/features_summary.tsv"
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), features], tmp_path)
    table = pd.read_csv(tmp_path / features, sep="\t").set_index("slide_id")
    assert table.loc["plain", "status"] == "excluded" and table.loc["plain", "n_patches"] == 0
    assert table.loc["good", "status"] == "ok" and table.loc["good", "n_patches"] == summary.loc["good", "patches"]
    assert (
        "excluded at tiling"
        in (tmp_path / "logs" / "extract_features" / "mine" / "resnet50_trunc" / "plain.log").read_text()
    )

    user_cohort(tmp_path, "fail")
    done = run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), "--forceall", target], tmp_path, check=False)
    assert done.returncode != 0
    log = (tmp_path / "logs" / "tile_slide" / "mine" / "plain.log").read_text()
    assert "slide plain" in log and "non-pyramidal" in log
    assert not (tmp_path / "results" / "mine" / "patches" / "plain.h5").exists()
