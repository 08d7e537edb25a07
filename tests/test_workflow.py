"""The Snakefile as a user runs it: lint, format, a dry run of the full DAG, a real run of the demo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter

import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
import safetensors.torch
import tifffile
import torch
import yaml

from model.config import training_config
from model.registry import cohort_models
from model.splits import write_mcat_split
from tests.conftest import ROOT
from workflow.features.features_file import read_features_attrs
from workflow.genomics import read_pathways
from workflow.sources import code_hash, import_closure

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def run(args, cwd, check=True):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


@pytest.mark.integration
def test_snakemake_lint_is_clean():
    done = run([*SNAKEMAKE, "--lint"], ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_snakefmt_check_is_clean():
    done = run([sys.executable, "-m", "snakefmt", "--check", "."], ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_dry_run_of_the_full_dag():
    done = run([*SNAKEMAKE, "-n", "--forceall", "--quiet", "rules"], ROOT)
    counts = dict(
        line.split() for line in done.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    from workflow.cohort import load_cohorts

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    training = training_config(config["training"])
    cohorts = load_cohorts(config["cohorts"], training)
    n_slides = sum(len(c.slide_ids) for c in cohorts.values())
    assert int(counts["demo_cohort"]) == 1
    assert int(counts["inventory_slides"]) == len(cohorts)
    assert int(counts["tile_slide"]) == n_slides
    assert int(counts["summarize_tiling"]) == len(cohorts)
    per_job = config["features"]["slides_per_job"]
    assert int(counts["extract_features"]) == sum(-(-len(c.slide_ids) // per_job) for c in cohorts.values())
    assert int(counts["place_features"]) == n_slides
    assert int(counts["check_weights"]) == 1  # the encoder's weights, checked once before any slide is read
    assert int(counts["summarize_features"]) == len(cohorts)
    assert int(counts["build_pathways"]) == sum("genomics" in c.modalities for c in cohorts.values())
    assert int(counts["crop_mri"]) == sum(len(c.patient_ids) for c in cohorts.values() if c.mri is not None)
    assert int(counts["gather_mri"]) == sum("mri" in c.modalities for c in cohorts.values())
    models = {
        name: cohort_models(name, cohort.modalities, config["cohorts"][name].get("models"), training.models)
        for name, cohort in cohorts.items()
    }
    assert models["demo_tcga"] == ["deref", "hdmoe", "snn", "abmil", "transmil", "concat_mlp", "coxph"]
    # the demo's experiment variants run on demo_tcga only (config comments say which)
    variants = config["experiments"]["run"]
    assert len(variants) == 3 and config["cohorts"]["demo_liver"]["experiments"] == []
    runs = sum(len(m) for m in models.values()) + len(variants)
    assert int(counts["make_splits"]) == len(cohorts)
    assert int(counts["make_seeded_splits"]) == 1  # deref_round_2's folds
    assert int(counts["train_fold"]) == training.folds * runs
    assert int(counts["evaluate_model"]) == int(counts["plot_model"]) == runs
    assert int(counts["summary_table"]) == int(counts["paper_tables"]) == int(counts["gate_weights_figure"]) == 1
    for rule in ("tiling_contact_sheet", "decoupled_features_figure", "attention_figure"):
        assert int(counts[rule]) == len(cohorts)
    packaged = config["package"]["runs"]
    assert int(counts["package_model"]) == sum(run in models[name] for name in models for run in packaged) > 0


def test_training_code_covers_every_library_module_the_training_script_imports(tmp_path):
    """The params hash that retrains models follows imports through model/ and workflow/, lazy ones included."""
    closure = [p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "scripts" / "train_fold.py", ROOT)]
    assert {"model/__init__.py", "model/fold.py", "model/train.py", "model/data.py", "model/config.py"} <= set(closure)
    assert {"model/coxph.py", "workflow/__init__.py", "workflow/features/__init__.py"} <= set(closure)
    assert {"model/evaluate.py", "workflow/plots.py", "workflow/cohort.py"}.isdisjoint(closure)
    # a package of its own, imported as a module, from a package and relatively inside a function
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "sub" / "__init__.py").write_text("")
    (tmp_path / "lib" / "sub" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "lib" / "sub" / "b.py").write_text("import os\n")
    (tmp_path / "lib" / "c.py").write_text("x = 1\n")
    (tmp_path / "script.py").write_text("import lib.sub.a\nfrom lib import c\nimport numpy\n")
    found = import_closure(tmp_path / "script.py", tmp_path, packages=("lib",))
    names = ["lib/__init__.py", "lib/c.py", "lib/sub/__init__.py", "lib/sub/a.py", "lib/sub/b.py"]
    assert [p.relative_to(tmp_path).as_posix() for p in found] == names
    before = code_hash(found)
    (tmp_path / "lib" / "sub" / "b.py").write_text("import sys\n")
    assert code_hash(found) != before


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
            # no slides and no sheets: the genomics table and outcomes alone
            "tiny_genomics": {
                "modalities": ["genomics"],
                "demo": {"kind": "tcga", "seed": 7, "n_patients": n_patients},
                "models": ["snn", "coxph"],
            },
        },
        "features": {"weights": "random", "write_clam_pt": True},
        "mri_roi": {"roi_shape": [16, 48, 48]},
        "training": {
            "models": ["deref", "snn", "mri_resnet", "coxph"],
            "folds": 2,
            "epochs": 1,
            "n_bins": 2,
            "bins": "cohort",
            "selection": "last",
            "threads": 1,
        },
        # one ablation with a decoupler of its own (Tables IV and VIII)
        "experiments": {"run": ["deref_rca_concat_mlp"]},
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
        # coxph reads every modality: the mean patch feature and the genomics, or the MRI statistics
        weights = safetensors.torch.load_file(
            tmp_path / "results" / cohort / "models" / "coxph" / "fold_0" / "weights.safetensors"
        )
        assert {"wsi.components", "genomics.components" if kind == "tcga" else "mri.components"} <= set(weights)
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
            for figure in ("km", "km_paper", "cindex_curves", "training_curves", "risk_groups"):
                for ext in ("png", "pdf"):
                    assert (
                        tmp_path / "results" / cohort / "figures" / model / f"{figure}.{ext}"
                    ).stat().st_size > 5_000
        figures = tmp_path / "results" / cohort / "figures"
        for figure in ("decoupled_features", "attention", "tiling_contact_sheet"):
            assert (figures / f"{figure}.png").stat().st_size > 5_000
        repeats = pd.read_csv(
            tmp_path / "results" / cohort / "models" / "deref" / "fold_0" / "predictions_repeats.tsv", sep="\t"
        )
        assert set(repeats["test_rfr"]) == {"average", "random"}
    genomics_only = tmp_path / "results" / "tiny_genomics"
    root = tmp_path / "resources" / "demo" / "tiny_genomics"
    assert sorted(p.name for p in root.iterdir()) == ["genomics.csv", "sheets", "signatures.csv", "truth.tsv"]
    assert sorted(p.name for p in genomics_only.iterdir()) == ["evaluation", "figures", "genomics", "models", "splits"]
    truth = pd.read_csv(root / "truth.tsv", sep="\t", dtype={"patient_id": str})
    assert read_pathways(genomics_only / "genomics" / "pathways.h5")[0] == list(truth["patient_id"])
    for model in ("snn", "coxph"):
        held = []
        for fold in (0, 1):
            out = genomics_only / "models" / model / f"fold_{fold}"
            held_out = list(pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"patient_id": str})["patient_id"])
            train = pd.read_csv(out / "predictions_train.tsv", sep="\t", dtype={"patient_id": str})
            assert sorted([*held_out, *train["patient_id"]]) == sorted(truth["patient_id"])
            held += held_out
        assert sorted(held) == sorted(truth["patient_id"])
        assert (genomics_only / "evaluation" / model / "cindex.tsv").is_file()
    table = pd.read_csv(tmp_path / "results" / "evaluation" / "table.tsv", sep="\t")
    assert len(table) == 2 * 10 and set(table["cohort"]) == {"tiny_tcga", "tiny_liver", "tiny_genomics"}
    markdown = (tmp_path / "results" / "evaluation" / "table.md").read_text()
    assert "| DeReF |" in markdown and "optimistic" in markdown
    check_paper_tables(tmp_path)

    again = run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), "-n"], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    run([*SNAKEMAKE, "--directory", str(tmp_path), "--report", str(tmp_path / "report.html")], tmp_path)
    html = (tmp_path / "report.html").read_text()
    for category in ("Paper tables", "Attention (Fig. 8)", "Decoupled features (Fig. 4)", "Tiling QC"):
        assert category in html
    assert "Random-weight features" in html
    only_plots_rerun_after_a_plotting_change(tmp_path)
    packages_score_new_patients(tmp_path)


def packages_score_new_patients(tmp_path):
    """The deref package of tiny_tcga scores four of its patients as new ones, from their raw slides and table.

    Their slides are tiled and encoded again with the package's settings, so the package's
    prediction must equal its members' saved predictions of the same patients, combined; then the
    heatmaps, the external validation, a rerun with nothing to do, and an encoder the package was
    not trained with refused.
    """
    from model.fold_outputs import read_predictions
    from model.package import combine_members, read_package

    demo = tmp_path / "resources" / "demo" / "tiny_tcga"
    patients = pd.read_csv(demo / "sheets" / "patients.tsv", sep="\t", dtype={"patient_id": str}).head(4)
    slides = pd.read_csv(demo / "sheets" / "slides.tsv", sep="\t", dtype=str)
    new = tmp_path / "new"
    new.mkdir()
    patients[["patient_id", "survival_months", "censorship"]].to_csv(new / "patients.tsv", sep="\t", index=False)
    slides[slides["patient_id"].isin(patients["patient_id"])].to_csv(new / "slides.tsv", sep="\t", index=False)
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    config["predict"] = {
        "package": "results/tiny_tcga/package/deref",
        "name": "local",
        "patients": str(new / "patients.tsv"),
        "slides": str(new / "slides.tsv"),
        "genomics": {"table": str(demo / "genomics.csv")},
        "top_k": 3,
    }
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), "predict"], tmp_path)

    package = read_package(tmp_path / "results" / "tiny_tcga" / "package" / "deref")
    manifest = package.manifest
    assert manifest["mode"] == "ensemble" and [m.fold for m in package.members] == [0, 1]
    assert manifest["encoder"]["encoder"] == "resnet50_trunc" and manifest["tiling"]["patch_size"] == 256
    families = read_pathways(tmp_path / "results" / "tiny_tcga" / "genomics" / "pathways.h5")[2]
    assert package.genomics_columns == families and manifest["code"]["training_code_sha256"]
    out = tmp_path / "results" / "local" / "prediction"
    predicted = read_predictions(out / "predictions.tsv").set_index("patient_id")
    assert list(predicted.index) == list(patients["patient_id"])
    members = []
    for fold in (0, 1):
        folder = tmp_path / "results" / "tiny_tcga" / "models" / "deref" / f"fold_{fold}"
        members.append(
            pd.concat(
                [read_predictions(folder / "predictions_train.tsv"), read_predictions(folder / "predictions.tsv")]
            )
        )
    saved = combine_members(members, [m.bin_edges for m in package.members], package.grid).set_index("patient_id")
    columns = ["risk", "survival_0", "survival_1", "gate_0"]
    np.testing.assert_allclose(predicted[columns], saved.loc[predicted.index, columns], rtol=1e-6, atol=1e-9)
    expected_groups = np.where(predicted["risk"] > package.cutoff, "high risk", "low risk")
    assert list(predicted["risk_group"]) == list(expected_groups)
    bins = pd.read_csv(out / "time_bins.tsv", sep="\t")
    assert list(bins["end_months"]) == pytest.approx(list(package.grid[1:]))
    for slide in slides.loc[slides["patient_id"].isin(patients["patient_id"]), "slide_id"]:
        assert (out / "heatmaps" / f"{slide}.png").stat().st_size > 5_000
    validation = pd.read_csv(out / "validation.tsv", sep="\t").iloc[0]
    assert validation["n_patients"] == 4 and validation["split"] == "package"
    assert np.isfinite(validation["c_index"]) or validation["reason"]
    assert (out / "km.png").stat().st_size > 5_000
    again = run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), "-n", "predict"], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    # a package copied from elsewhere: its manifest gives the settings; features of other weights are refused by name
    shipped = tmp_path / "shipped" / "deref"
    shutil.copytree(package.folder, shipped)
    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["encoder"]["weights_sha256"] = "0" * 64
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    config["predict"]["package"] = str(shipped)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    refused = run([*SNAKEMAKE, "--cores", "1", "--directory", str(tmp_path), "predict"], tmp_path, check=False)
    log = (tmp_path / "logs" / "predict_patients" / "local.log").read_text()
    assert refused.returncode != 0
    assert "results/local/features/resnet50_trunc/" in log and "was made with encoder weights (sha256)" in log
    config["features"]["encoder"] = "uni_v1"
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    refused = run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "predict"], tmp_path, check=False)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "was trained on resnet50_trunc features; set features: encoder: resnet50_trunc" in said
    # a slide whose resolution cannot give the package's 0.5 µm/px within its tolerance
    config["features"]["encoder"] = "resnet50_trunc"
    config["predict"]["package"] = "results/tiny_tcga/package/deref"
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    sheet = pd.read_csv(new / "slides.tsv", sep="\t", dtype=str)
    sheet.loc[0, "mpp"] = "2.0"
    sheet.to_csv(new / "slides.tsv", sep="\t", index=False)
    refused = run([*SNAKEMAKE, "--cores", "1", "--directory", str(tmp_path), "predict"], tmp_path, check=False)
    log = (tmp_path / "logs" / "tile_slide" / "local" / f"{sheet.loc[0, 'slide_id']}.log").read_text()
    assert refused.returncode != 0 and "coarser than the target 0.5 µm/px" in log


def check_paper_tables(tmp_path):
    """The main table's C-index cells equal Harrell's C recomputed from each fold's saved predictions."""
    from model.metrics import harrell_c

    tables = tmp_path / "results" / "paper" / "tables"
    main = pd.read_csv(tables / "table_main.tsv", sep="\t")
    honest = main[(main["protocol"] == "honest") & (main["cohort"] != "Overall")]
    assert len(honest) > 0
    for row in honest.itertuples():
        folds = []
        for fold in (0, 1):
            path = tmp_path / "results" / row.cohort / "models" / row.run / f"fold_{fold}" / "predictions.tsv"
            if path.exists():
                p = pd.read_csv(path, sep="\t")
                folds.append(harrell_c(p["survival_months"], p["censorship"], p["risk"]))
        if not folds:
            assert np.isnan(row.mean) and "not run" in row.reason
            continue
        finite = [c for c in folds if np.isfinite(c)]
        assert row.mean == pytest.approx(np.mean(finite)) and row.std == pytest.approx(np.std(finite))
    for name in ("IV", "VIII", "X"):
        assert "Honest" in (tables / f"table_{name}.md").read_text()
    repeats = pd.read_csv(tables / "table_X.tsv", sep="\t")
    deterministic = repeats[(repeats["test_rfr"] == "average") & (repeats["row"] == "Average")]
    assert (deterministic["std"].dropna() < 1e-12).all()  # the deterministic test repeats exactly


PLOTTING_RULES = {
    "plot_model",
    "decoupled_features_figure",
    "gate_weights_figure",
    "attention_figure",
    "tiling_contact_sheet",
    "figures",
    "all",
}


def only_plots_rerun_after_a_plotting_change(tmp_path):
    """A copy of the workflow whose plotting module changed reruns plotting jobs only."""
    import shutil

    copy = tmp_path / "workflow_copy"
    copy.mkdir()
    for entry in ("Snakefile", "rules", "scripts", "model", "workflow", "config", "report", "envs", "profiles"):
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, copy / entry, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, copy / entry)
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(copy / "Snakefile"), "--directory", str(tmp_path)]
    unchanged = run([*command, "-n", "figures"], tmp_path)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
    with (copy / "model" / "figures" / "survival.py").open("a") as module:
        module.write("\n# a plotting change\n")
    changed = run([*command, "figures", "-n", "--quiet", "rules"], tmp_path)
    jobs = {
        line.split()[0] for line in changed.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert "plot_model" in jobs and jobs - {"total"} <= PLOTTING_RULES


def training_inputs(listing: str) -> dict[tuple[str, str], list[str]]:
    """(cohort, run) -> input files of its fold-0 train_fold job, from a dry run's job listing."""
    jobs = {}
    for block in re.split(r"\n(?=\S)", listing):
        if block.startswith("rule train_fold:"):
            fields = dict(line.strip().split(": ", 1) for line in block.splitlines()[1:] if ": " in line)
            wildcards = dict(w.split("=") for w in fields["wildcards"].split(", "))
            if wildcards["fold"] == "0":
                jobs[wildcards["cohort"], wildcards["variant"]] = fields["input"].split(", ")
    return jobs


def summary(stdout: str) -> list[list[str]]:
    """The rows (output file, date, rule, ...) of ``snakemake --summary``, header left out."""
    return [line.split("\t") for line in stdout.splitlines() if "\t" in line and not line.startswith("output_file")]


@pytest.mark.integration
def test_training_jobs_wait_only_for_the_modalities_their_model_reads(tmp_path):
    """A genomics-only model's job has no slide features among its inputs: it never waits for them."""
    tiny_config(tmp_path)
    done = run([*SNAKEMAKE, "-n", "--forceall", "--directory", str(tmp_path)], tmp_path)
    jobs = training_inputs(done.stdout + done.stderr)
    reads = {
        ("tiny_tcga", "deref"): {"wsi", "genomics"},
        ("tiny_tcga", "snn"): {"genomics"},
        ("tiny_liver", "deref"): {"wsi", "mri"},
        ("tiny_liver", "mri_resnet"): {"mri"},
        ("tiny_genomics", "snn"): {"genomics"},
        ("tiny_genomics", "coxph"): {"genomics"},
        ("tiny_tcga", "coxph"): {"wsi", "genomics"},  # coxph reads every modality of its cohort
        ("tiny_liver", "coxph"): {"wsi", "mri"},
        ("tiny_tcga", "deref_rca_concat_mlp"): {"wsi", "genomics"},  # a variant reads as its model
        ("tiny_liver", "deref_rca_concat_mlp"): {"wsi", "mri"},
    }
    assert set(jobs) == set(reads)
    for (cohort, model), inputs in jobs.items():
        expected = [f"results/{cohort}/splits/splits_0.csv"]
        expected += [f"results/{cohort}/genomics/pathways.h5"] if "genomics" in reads[cohort, model] else []
        expected += [f"results/{cohort}/mri/roi.h5"] if "mri" in reads[cohort, model] else []
        features = [f for f in inputs if f.startswith(f"results/{cohort}/features/resnet50_trunc/")]
        assert sorted(set(inputs) - set(features)) == sorted(expected), (cohort, model)
        assert bool(features) == ("wsi" in reads[cohort, model]), (cohort, model)


@pytest.mark.integration
def test_a_refit_package_plans_one_model_on_every_patient_and_predict_needs_a_package(tmp_path):
    """package: mode: refit adds one train_refit job per packaged run; the predict target asks for its config."""
    config = tiny_config(tmp_path)
    config["package"] = {"mode": "refit", "runs": ["deref", "coxph"]}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--quiet", "rules", "--directory", str(tmp_path), "package"], tmp_path)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", done.stdout, re.MULTILINE))
    # deref on tiny_tcga and tiny_liver, coxph on all three cohorts
    assert jobs["package_model"] == "5" and jobs["train_refit"] == "5"
    refused = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path), "predict"], tmp_path, check=False)
    assert refused.returncode != 0 and "the predict target needs predict: package:" in refused.stdout + refused.stderr


@pytest.mark.integration
def test_a_configfile_replaces_the_default_config(tmp_path):
    """--configfile runs its own cohorts only (Snakemake would merge it into config/config.yaml's)."""
    config = tiny_config(tmp_path)
    own = {"cohorts": {"tiny_genomics": config["cohorts"]["tiny_genomics"]}, "training": config["training"]}
    (tmp_path / "genomics.yaml").write_text(yaml.safe_dump(own))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path), "--configfile", "genomics.yaml", "--summary"], tmp_path)
    outputs = summary(done.stdout)
    assert {rule for _, _, rule, *_ in outputs} >= {"demo_cohort", "build_pathways", "train_fold"}
    prefixes = ("results/tiny_genomics/", "results/evaluation/", "results/paper/", "resources/demo/tiny_genomics/")
    assert [path for path, *_ in outputs if not path.startswith(prefixes)] == []


@pytest.mark.integration
def test_folds_are_checked_when_snakemake_starts(tmp_path):
    """MCAT splits with an event-free held-out fold warn; folds the patients cannot fill stop -n."""
    from workflow.cohort import load_cohort

    config = tiny_config(tmp_path)
    cohort = load_cohort("tiny_genomics", config["cohorts"]["tiny_genomics"])
    censored = cohort.patients["censorship"] == 1
    censored, events = list(cohort.patients.index[censored]), list(cohort.patients.index[~censored])
    (tmp_path / "splits").mkdir()
    write_mcat_split(tmp_path / "splits" / "splits_0.csv", events, censored)
    write_mcat_split(tmp_path / "splits" / "splits_1.csv", censored, events)
    config["cohorts"]["tiny_genomics"]["splits"] = "splits"
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path)
    assert "cohort 'tiny_genomics': fold 0 (splits/splits_0.csv) holds no event" in done.stdout + done.stderr

    config["training"]["folds"] = 7
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path, check=False)
    assert done.returncode != 0
    assert re.search(r"cohort 'tiny_\w+': 6 patient\(s\) cannot fill training: folds: 7", done.stdout + done.stderr)


@pytest.mark.realdata
@pytest.mark.integration
def test_documented_tcga_genomics_config_plans_mcat_folds_and_no_slide_job(shared_data):
    """config/examples/tcga_blca_genomics.yaml, dry run on the real table: 5 folds per model, slides untouched."""
    configfile = ROOT / "config" / "examples" / "tcga_blca_genomics.yaml"
    done = run([*SNAKEMAKE, "-n", "--configfile", str(configfile), "--summary"], ROOT)
    outputs = summary(done.stdout)
    predictions = Counter(
        path.split("/")[3]
        for path, _, rule, *_ in outputs
        if rule == "train_fold" and path.endswith("/predictions.tsv")
    )
    assert predictions == {"snn": 5, "coxph": 5}
    own = ("results/tcga_blca/", "results/evaluation/", "results/paper/")
    assert [path for path, *_ in outputs if not path.startswith(own)] == []
    slide_rules = {
        "demo_cohort",
        "inventory_slides",
        "tile_slide",
        "summarize_tiling",
        "extract_features",
        "place_features",
    }
    assert not slide_rules & {rule for _, _, rule, *_ in outputs}


@pytest.mark.integration
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


@pytest.mark.integration
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
    pd.DataFrame({"patient_id": ["P1", "P2"], "survival_months": [10.0, 20.0], "censorship": [0, 0]}).to_csv(
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
            {
                "cohorts": {"mine": cohort},
                "tiling": {"on_error": on_error},
                "features": {"weights": "random"},
                # two patients: the smallest cross-validation the parse-time checks accept (with
                # bins from the whole cohort: each fold's single training patient cannot define two)
                "training": {"folds": 2, "n_bins": 2, "bins": "cohort"},
            }
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
        in (tmp_path / "logs" / "extract_features" / "mine" / "resnet50_trunc" / "batch0.log").read_text()
    )
    # a job that died after writing its slides: the rerun keeps them and only links them again
    folder = tmp_path / "results" / "mine" / "features" / "resnet50_trunc"
    staged = (folder / "staged" / "good.h5").stat()
    assert (folder / "good.h5").stat().st_ino == staged.st_ino  # a link, not a copy
    (folder / "batches" / "0.tsv").unlink()
    (folder / "good.h5").unlink()
    good = "results/mine/features/resnet50_trunc/good.h5"
    run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), good], tmp_path)
    log = (tmp_path / "logs" / "extract_features" / "mine" / "resnet50_trunc" / "batch0.log").read_text()
    assert log.count("already written by an earlier run from the same inputs, kept") == 2
    assert (folder / "staged" / "good.h5").stat().st_ino == staged.st_ino
    assert read_features_attrs(folder / "good.h5")["n_patches"] == summary.loc["good", "patches"]

    user_cohort(tmp_path, "fail")
    done = run([*SNAKEMAKE, "--cores", "2", "--directory", str(tmp_path), "--forceall", target], tmp_path, check=False)
    assert done.returncode != 0
    log = (tmp_path / "logs" / "tile_slide" / "mine" / "plain.log").read_text()
    assert "slide plain" in log and "non-pyramidal" in log
    assert not (tmp_path / "results" / "mine" / "patches" / "plain.h5").exists()
