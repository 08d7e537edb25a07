"""Model packages: built from fold outputs, reloaded without unpickling, scoring new patients as the folds did."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from model.bins import time_bin_edges
from model.data import load_cohort_data
from model.fold import train_model
from model.fold_outputs import FILES, read_predictions, write_fold_outputs
from model.package import (
    PackageError,
    assemble_manifest,
    check_features,
    cohort_predictions,
    combine_members,
    read_package,
    survival_on_grid,
    write_package,
)
from model.predict import score
from model.variants import plain
from tests.conftest import ROOT
from tests.test_fold import TRAINING, tiny_cohort
from workflow.genomics import GenomicsError, package_pathways
from workflow.io import write_tsv

ENCODER = {"encoder": "resnet50_trunc", "weights_sha256": "ab" * 32}


def trained_package(tmp_path, run, training=TRAINING, folds=2, mode="ensemble"):
    """Train ``run`` on two folds of the tiny cohort (or once on every patient: ``mode="refit"``),
    write the outputs as the workflow does and package them."""
    outcomes, slides, _ = tiny_cohort(tmp_path)
    model = plain(run)
    modalities = {"deref": ("wsi", "genomics"), "snn": ("genomics",), "abmil": ("wsi",), "coxph": ("wsi", "genomics")}
    used = modalities[run]
    data = load_cohort_data(
        outcomes,
        slides if "wsi" in used else None,
        genomics=tmp_path / "pathways.h5" if "genomics" in used else None,
    )
    ids = list(outcomes.index)
    parts = [ids[k::folds] for k in range(folds)] if mode == "ensemble" else [[]]
    metas, tables, sources = [], [], []
    for k, held in enumerate(parts):
        train = [p for p in ids if p not in held]
        result, meta = train_model(data, model, k, train, held, training)
        folder = tmp_path / run / (f"fold_{k}" if mode == "ensemble" else "refit")
        paths = {key: folder / name for key, name in FILES.items()}
        write_fold_outputs(paths, result, meta, data)
        metas.append(json.loads(paths["meta"].read_text()))
        tables.append(cohort_predictions(paths["predictions_train"], paths["predictions"]))
        sources.append((paths["weights"], paths["scaling"]))
    columns = {name: [f"g{i}_{j}" for j in range(m.shape[1])] for i, (name, m) in enumerate(data.families.items())}
    provenance = {
        "modalities": list(used),
        "genomics_columns": columns if "genomics" in used else {},
        "mri_sequences": [],
        "encoder": ENCODER if "wsi" in used else None,
    }
    edges = time_bin_edges(outcomes["survival_months"].to_numpy(), outcomes["censorship"].to_numpy(), training.n_bins)
    manifest = assemble_manifest("tiny", run, mode, metas, tables, edges, run != "coxph", provenance)
    write_package(tmp_path / "package", manifest, sources)
    return data, parts


@pytest.mark.parametrize("run", ["deref", "snn", "coxph"])
def test_a_package_scores_held_out_patients_exactly_as_the_fold_models(tmp_path, run):
    data, parts = trained_package(tmp_path, run)
    package = read_package(tmp_path / "package")
    scores = score(package, data)
    for k in range(len(parts)):
        fold = read_predictions(tmp_path / run / f"fold_{k}" / "predictions.tsv").set_index("patient_id")
        # through the same TSV writer as the fold's file (its text keeps 16 significant digits)
        write_tsv(scores.members[k], tmp_path / f"member_{k}.tsv")
        mine = read_predictions(tmp_path / f"member_{k}.tsv").set_index("patient_id").loc[fold.index]
        columns = [c for c in fold.columns if c.startswith(("risk", "hazard_", "survival_", "gate_"))]
        assert len(columns) > 3
        np.testing.assert_array_equal(mine[columns].to_numpy(float), fold[columns].to_numpy(float))
    table = scores.table
    assert list(table["patient_id"]) == list(data.outcomes.index)
    assert set(table["risk_group"]) <= {"high risk", "low risk"}
    # the cut-off is the median package risk of the training cohort (here: the same patients)
    assert package.cutoff == pytest.approx(np.median(table["risk"]))
    if run == "deref":
        assert {"gate_0", "gate_3"} <= set(table.columns)
        first = scores.details[table["patient_id"].iloc[0]]
        assert "attention" in first and "patch_attribution_shared" in first


@pytest.mark.parametrize("run", ["deref", "coxph"])
def test_a_refit_package_is_one_model_trained_on_every_patient(tmp_path, run):
    data, _ = trained_package(tmp_path, run, mode="refit")
    package = read_package(tmp_path / "package")
    assert package.manifest["mode"] == "refit" and [m.name for m in package.members] == ["refit"]
    assert "seconds" not in package.members[0].meta  # run statistics stay in fold.json: same training, same bytes
    assert package.members[0].meta["n_held_out"] == 0 and package.members[0].meta["n_train"] == len(data.outcomes)
    write_tsv(score(package, data).table.drop(columns="risk_group"), tmp_path / "scored.tsv")
    scored = read_predictions(tmp_path / "scored.tsv").set_index("patient_id")
    trained = read_predictions(tmp_path / run / "refit" / "predictions_train.tsv").set_index("patient_id")
    columns = [c for c in trained.columns if c.startswith(("risk", "survival_", "gate_"))]
    np.testing.assert_array_equal(scored.loc[trained.index, columns], trained[columns])
    assert package.cutoff == np.median(trained["risk"])


def test_a_package_reloads_in_a_fresh_process_to_the_same_scores(tmp_path):
    data, _ = trained_package(tmp_path, "deref")
    write_tsv(score(read_package(tmp_path / "package"), data).table, tmp_path / "here.tsv")
    here = pd.read_csv(tmp_path / "here.tsv", sep="\t", dtype={"patient_id": str})
    script = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
import pandas as pd
from model.data import load_cohort_data
from model.package import read_package
from model.predict import score
from tests.test_fold import tiny_cohort
from workflow.io import write_tsv
from pathlib import Path
outcomes, slides, _ = tiny_cohort(Path({str(tmp_path / "again")!r}))
data = load_cohort_data(outcomes, slides, genomics=Path({str(tmp_path / "again")!r}) / "pathways.h5")
write_tsv(score(read_package({str(tmp_path / "package")!r}), data).table, {str(tmp_path / "fresh.tsv")!r})
"""
    (tmp_path / "again").mkdir()
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)
    fresh = pd.read_csv(tmp_path / "fresh.tsv", sep="\t", dtype={"patient_id": str})
    numbers = [c for c in here.columns if c not in ("patient_id", "risk_group")]
    np.testing.assert_array_equal(fresh[numbers].to_numpy(float), here[numbers].to_numpy(float))
    assert list(fresh["risk_group"]) == list(here["risk_group"])


def test_an_altered_member_file_or_a_foreign_folder_is_refused(tmp_path):
    trained_package(tmp_path, "snn")
    folder = tmp_path / "package"
    member = folder / "member_1.weights.safetensors"
    member.write_bytes(member.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(PackageError, match=r"member_1\.weights\.safetensors: sha256 .* differs"):
        read_package(folder)
    with pytest.raises(PackageError, match=r"no manifest\.json"):
        read_package(tmp_path)


def test_features_of_another_encoder_or_weights_are_refused_by_name():
    manifest = {"run": "deref", "cohort": "tiny", "encoder": ENCODER}
    check_features(manifest, "same.h5", dict(ENCODER))
    check_features(manifest, "excluded.h5", {"status": "excluded"})
    with pytest.raises(PackageError, match=r"features file uni\.h5 was made with encoder uni_v1.*resnet50_trunc"):
        check_features(manifest, "uni.h5", ENCODER | {"encoder": "uni_v1"})
    with pytest.raises(PackageError, match=r"other\.h5 was made with encoder weights \(sha256\) cd"):
        check_features(manifest, "other.h5", ENCODER | {"weights_sha256": "cd" * 32})


def test_members_curves_are_read_on_the_package_grid():
    table = pd.DataFrame({"patient_id": ["a"], "survival_0": [0.9], "survival_1": [0.5], "survival_2": [0.2]})
    edges = np.array([0.0, 10.0, 20.0, 30.0])
    np.testing.assert_array_equal(survival_on_grid(table, edges, edges), [[0.9, 0.5, 0.2]])
    # a grid end before the member's first end sees S = 1; between ends, the earlier end's value
    np.testing.assert_array_equal(survival_on_grid(table, edges, np.array([0.0, 5.0, 25.0, 30.0])), [[1.0, 0.5, 0.2]])
    other = table.assign(survival_0=0.7, survival_1=0.3, survival_2=0.1)
    combined = combine_members([table, other], [edges, edges], edges)
    np.testing.assert_allclose(combined[["survival_0", "survival_1", "survival_2"]], [[0.8, 0.4, 0.15]])
    assert combined["risk"].iloc[0] == pytest.approx(-(0.8 + 0.4 + 0.15))
    np.testing.assert_allclose(combined["hazard_0"], 0.2)
    np.testing.assert_allclose(combined["hazard_1"], 0.5)


def test_new_genomics_must_hold_the_package_columns_unless_imputed(tmp_path):
    table = tmp_path / "new.csv"
    pd.DataFrame({"case_id": ["N1", "N2"], "A_rnaseq": [1.0, 2.0], "B_rnaseq": [3.0, None], "C_cnv": [0, 1]}).to_csv(
        table, index=False
    )
    columns = {"one": ["A_rnaseq", "B_rnaseq"], "two": ["A_rnaseq", "C_cnv", "D_cnv"]}  # A in both families
    with pytest.raises(
        GenomicsError, match=r"1 of the package's 4 genomic columns are missing: D_cnv.*impute: training_mean"
    ):
        package_pathways(table, ["N1", "N2"], columns)
    with pytest.raises(GenomicsError, match="missing value in column 'B_rnaseq' for patient N2"):
        package_pathways(table, ["N1", "N2"], {"one": ["A_rnaseq", "B_rnaseq"]})
    with pytest.raises(GenomicsError, match=r"no genomics for new patient.*N3"):
        package_pathways(table, ["N1", "N3"], {"one": ["A_rnaseq"]})
    matrices, families = package_pathways(table, ["N2", "N1"], columns, impute="training_mean")
    np.testing.assert_array_equal(matrices["one"], [[2.0, np.nan], [1.0, 3.0]])
    np.testing.assert_array_equal(matrices["two"][:, :2], [[2.0, 1.0], [1.0, 0.0]])
    assert np.isnan(matrices["two"][:, 2]).all() and families[1].missing_genes == ["D_cnv"]


def test_imputed_genomics_score_as_the_training_mean(tmp_path):
    data, _ = trained_package(tmp_path, "snn")
    package = read_package(tmp_path / "package")
    first = next(iter(data.families))
    at_mean = replace(data, families=dict(data.families))
    means = []
    for member in package.members:
        from model.fold_outputs import read_tensors

        means.append(read_tensors(member.scaling)[0][f"genomics.{first}.mean"])
    # one member: a NaN column scores as that member's training mean
    single = tmp_path / "single"
    manifest = json.loads((tmp_path / "package" / "manifest.json").read_text())
    manifest["members"] = manifest["members"][:1]
    single.mkdir()
    for name in ("member_0.weights.safetensors", "member_0.scaling.safetensors"):
        (single / name).write_bytes((tmp_path / "package" / name).read_bytes())
    (single / "manifest.json").write_text(json.dumps(manifest))
    one = read_package(single)
    at_mean.families[first] = np.full_like(data.families[first], np.nan)
    filled = replace(data, families=dict(data.families))
    filled.families[first] = np.tile(means[0].astype(np.float32), (len(data.outcomes), 1))
    np.testing.assert_allclose(score(one, at_mean).table["risk"], score(one, filled).table["risk"], rtol=1e-5)


def test_new_patients_may_lack_outcomes_but_not_a_sequence_the_package_reads(tmp_path):
    from workflow.cohort import CohortError, has_outcomes, load_new_patients

    for name in ("t1.nii.gz", "t2.nii.gz", "mask.nii.gz", "u1.nii.gz", "umask.nii.gz"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "patients.tsv").write_text("patient_id\nN1\nN2\n")
    rows = [("N1", "t1", "t1.nii.gz", "mask.nii.gz"), ("N1", "t2", "t2.nii.gz", "mask.nii.gz")]
    rows.append(("N2", "t1", "u1.nii.gz", "umask.nii.gz"))
    pd.DataFrame(rows, columns=["patient_id", "sequence", "image", "mask"]).assign(
        image=lambda d: str(tmp_path) + "/" + d["image"], mask=lambda d: str(tmp_path) + "/" + d["mask"]
    ).to_csv(tmp_path / "mri.tsv", sep="\t", index=False)
    cfg = {
        "modalities": ["mri"],
        "patients": str(tmp_path / "patients.tsv"),
        "mri": {"sheet": str(tmp_path / "mri.tsv"), "sequences": ["t1", "t2"]},
    }
    with pytest.raises(CohortError, match=r"MRI sequence\(s\) the package reads are missing: N2: t2"):
        load_new_patients("new", cfg, ["t1", "t2"])
    cohort = load_new_patients("new", cfg | {"mri": cfg["mri"] | {"sequences": ["t1"]}}, ["t1"])
    assert cohort.patient_ids == ["N1", "N2"] and not has_outcomes(cohort)
    assert list(cohort.mri["sequence"]) == ["t1", "t1"]  # N1's t2, which the package does not read, is not read
    (tmp_path / "patients.tsv").write_text("patient_id\tsurvival_months\nN1\t3\nN2\t4\n")
    with pytest.raises(CohortError, match="has 'survival_months' but not 'censorship'"):
        load_new_patients("new", cfg, ["t1"])


def test_the_families_keep_the_models_input_order_through_the_manifest(tmp_path):
    """The manifest is written with sorted keys; the families must come back in the order the model reads them."""
    trained_package(tmp_path, "snn")
    manifest = json.loads((tmp_path / "package" / "manifest.json").read_text())
    order = [
        "Tumor Suppression",
        "Oncogenesis",
        "Protein Kinases",
        "Cellular Differentiation",
        "Transcription",
        "Cytokines",
    ]
    renamed = dict(zip(order, [e["columns"] for e in manifest["genomics_families"]], strict=True))
    sources = [(tmp_path / "package" / m["weights"], tmp_path / "package" / m["scaling"]) for m in manifest["members"]]
    metas = [m["meta"] for m in manifest["members"]]
    folds = [tmp_path / "snn" / f"fold_{k}" for k in (0, 1)]
    tables = [cohort_predictions(f / "predictions_train.tsv", f / "predictions.tsv") for f in folds]
    again = assemble_manifest(
        "tiny",
        "snn",
        "ensemble",
        metas,
        tables,
        read_package(tmp_path / "package").grid,
        True,
        {"modalities": ["genomics"], "genomics_columns": renamed, "mri_sequences": [], "encoder": None},
    )
    write_package(tmp_path / "renamed", again, sources)
    assert list(read_package(tmp_path / "renamed").genomics_columns) == order
