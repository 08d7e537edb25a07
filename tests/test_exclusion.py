"""``tiling: on_error: exclude`` end to end: a patient without a usable slide leaves the models that read
slides, stays in the others, and every summary says so; switching on_error recomputes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from tests.test_workflow import SNAKEMAKE, run


def excluding_cohort(tmp_path, on_error="exclude"):
    """Six patients: P6's only slide and P2's second slide are plain TIFFs that tiling cannot read."""
    from workflow.demo import tissue
    from workflow.demo.design import item_rng

    rows = []
    for i in range(1, 6):
        rng = item_rng(11, i)
        layout = tissue.random_layout(rng)
        tissue.write_slide(tmp_path / f"S{i}.svs", layout, tissue.appearance(layout, 0.5 * i - 1.5, rng), 0.5, 20)
        rows.append({"slide_id": f"S{i}", "patient_id": f"P{i}", "path": f"S{i}.svs"})
    for slide, patient, value in (("plain2", "P2", 210), ("plain6", "P6", 230)):
        tifffile.imwrite(tmp_path / f"{slide}.tif", np.full((400, 500, 3), value, np.uint8), photometric="rgb")
        rows.append({"slide_id": slide, "patient_id": patient, "path": f"{slide}.tif"})
    pd.DataFrame(rows).to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    patients = [f"P{i}" for i in range(1, 7)]
    pd.DataFrame(
        {"patient_id": patients, "survival_months": [5.0, 9, 14, 20, 31, 12], "censorship": [0, 0, 1, 0, 0, 0]}
    ).to_csv(tmp_path / "patients.tsv", sep="\t", index=False)
    rng = np.random.default_rng(0)
    genes = ["TP53", "RB1", "PTEN", "MYC"]
    table = pd.DataFrame({f"{g}_rnaseq": rng.standard_normal(6) for g in genes}).assign(case_id=patients)
    table.to_csv(tmp_path / "genomics.csv")
    pd.DataFrame({"Tumor Suppressor Genes": ["TP53", "RB1"], "Oncogenes": ["MYC", "PTEN"]}).to_csv(
        tmp_path / "signatures.csv", index=False
    )
    config = {
        "cohorts": {
            "mine": {
                "modalities": ["wsi", "genomics"],
                "patients": "patients.tsv",
                "slides": "slides.tsv",
                "genomics": {"table": "genomics.csv", "signatures": "signatures.csv"},
                "models": ["abmil", "snn", "coxph"],
            }
        },
        "tiling": {"on_error": on_error},
        "features": {"weights": "random", "input_size": 112},
        "pathways": {"min_gene_fraction": 0.0},
        "training": {"folds": 2, "epochs": 1, "n_bins": 2, "bins": "cohort", "selection": "last", "threads": 1},
    }
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.integration
def test_excluded_patient_leaves_slide_models_only_and_switching_on_error_reruns_nothing(tmp_path):
    excluding_cohort(tmp_path)
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path)], tmp_path)
    results = tmp_path / "results" / "mine"
    tiling = pd.read_csv(results / "patches" / "tiling_summary.tsv", sep="\t").set_index("slide_id")
    assert tiling.loc[["plain2", "plain6"], "status"].eq("excluded").all()
    features = pd.read_csv(results / "features" / "resnet50_trunc" / "features_summary.tsv", sep="\t")
    assert features.set_index("slide_id").loc[["plain2", "plain6"], "status"].eq("excluded").all()
    held = {}
    for model in ("abmil", "snn", "coxph"):
        held[model] = sorted(
            p
            for fold in (0, 1)
            for p in pd.read_csv(results / "models" / model / f"fold_{fold}" / "predictions.tsv", sep="\t")[
                "patient_id"
            ]
        )
    # abmil and coxph read slides: P6 (no usable slide) is left out; P2 keeps its good slide
    assert held["abmil"] == held["coxph"] == ["P1", "P2", "P3", "P4", "P5"]
    assert held["snn"] == ["P1", "P2", "P3", "P4", "P5", "P6"]  # genomics only: P6 stays
    metrics = pd.read_csv(results / "evaluation" / "abmil" / "metrics.tsv", sep="\t")
    pooled = metrics[(metrics["fold"] == "pooled") & (metrics["protocol"] == "honest")].iloc[0]
    assert pooled["n_excluded"] == 1 and pooled["excluded"] == "P6"
    snn = pd.read_csv(results / "evaluation" / "snn" / "metrics.tsv", sep="\t")
    assert (snn["n_excluded"] == 0).all()
    comparison = pd.read_csv(results / "evaluation" / "comparison.tsv", sep="\t").set_index("model")
    assert (comparison["n_patients"] == 5).all()
    assert "compared on the 5 patients every model holds out" in comparison.loc["snn", "reason"]
    table = pd.read_csv(tmp_path / "results" / "evaluation" / "table.tsv", sep="\t")
    honest = table[table["protocol"] == "honest"].set_index("model")
    assert honest.loc["abmil", "n_excluded"] == 1 and honest.loc["snn", "n_excluded"] == 0
    markdown = (tmp_path / "results" / "evaluation" / "table.md").read_text()
    assert "1 patient(s) left out, their slides or MRI excluded (P6)" in markdown
    assert (
        "P6 left out: no usable slide or MRI"
        in (tmp_path / "logs" / "evaluate_model" / "mine" / "abmil.log").read_text()
    )

    # what a failure does is not a result, nor is the list of models other cohorts train: switching
    # on_error, or adding a model to training.models, recomputes nothing
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    config["tiling"]["on_error"] = "fail"
    config["training"]["models"] = ["abmil", "snn", "coxph", "deref"]
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path)
    assert "Nothing to be done" in done.stdout + done.stderr, done.stdout[-3000:]


@pytest.mark.integration
def test_an_mri_that_cannot_be_cropped_leaves_the_mri_models_only(tmp_path):
    """mri_roi: on_error: exclude: P3's tumour mask is empty; coxph (slides + MRI) leaves P3 out, abmil keeps P3."""
    import nibabel as nib

    from workflow.demo import mri, tissue
    from workflow.demo.design import LIVER_SEQUENCES, item_rng

    slides, scans = [], []
    for i in range(1, 7):
        rng = item_rng(12, i)
        layout = tissue.random_layout(rng)
        tissue.write_slide(tmp_path / f"S{i}.svs", layout, tissue.appearance(layout, 0.5 * i - 1.5, rng), 0.5, 20)
        slides.append({"slide_id": f"S{i}", "patient_id": f"P{i}", "path": f"S{i}.svs"})
        folder = tmp_path / "mri" / f"P{i}"
        folder.mkdir(parents=True)
        mri.write_patient(0.5 * i - 1.5, rng, folder)
        scans += [
            {
                "patient_id": f"P{i}",
                "sequence": s,
                "image": f"mri/P{i}/{s}.nii.gz",
                "mask": f"mri/P{i}/tumour_mask.nii.gz",
            }
            for s in LIVER_SEQUENCES
        ]
    mask = nib.load(tmp_path / "mri" / "P3" / "tumour_mask.nii.gz")
    nib.save(
        nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine), tmp_path / "mri" / "P3" / "tumour_mask.nii.gz"
    )
    pd.DataFrame(slides).to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    pd.DataFrame(scans).to_csv(tmp_path / "mri.tsv", sep="\t", index=False)
    pd.DataFrame({"patient_id": [f"P{i}" for i in range(1, 7)], "survival_months": [5.0, 9, 14, 20, 31, 12]}).assign(
        censorship=[0, 0, 1, 0, 0, 0]
    ).to_csv(tmp_path / "patients.tsv", sep="\t", index=False)
    cohort = {
        "modalities": ["wsi", "mri"],
        "patients": "patients.tsv",
        "slides": "slides.tsv",
        "mri": {"sheet": "mri.tsv", "sequences": list(LIVER_SEQUENCES)},
        "models": ["abmil", "coxph"],
    }
    config = {
        "cohorts": {"liver": cohort},
        "mri_roi": {"roi_shape": [8, 16, 16], "on_error": "exclude"},
        "features": {"weights": "random", "input_size": 112},
        "training": {"folds": 2, "epochs": 1, "n_bins": 2, "bins": "cohort", "selection": "last", "threads": 1},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path)], tmp_path)
    results = tmp_path / "results" / "liver"
    assert (
        "patient P3 excluded: patient P3: tumour mask" in (tmp_path / "logs" / "gather_mri" / "liver.log").read_text()
    )
    held = {
        model: sorted(
            p
            for fold in (0, 1)
            for p in pd.read_csv(results / "models" / model / f"fold_{fold}" / "predictions.tsv", sep="\t")[
                "patient_id"
            ]
        )
        for model in ("abmil", "coxph")
    }
    assert held["abmil"] == ["P1", "P2", "P3", "P4", "P5", "P6"] and held["coxph"] == ["P1", "P2", "P4", "P5", "P6"]
    metrics = pd.read_csv(results / "evaluation" / "coxph" / "metrics.tsv", sep="\t")
    assert metrics.loc[metrics["fold"] == "pooled", "excluded"].eq("P3").all()

    config["mri_roi"]["on_error"] = "fail"  # not a job parameter: nothing recomputes
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path)
    assert "Nothing to be done" in done.stdout + done.stderr
