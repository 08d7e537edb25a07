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


def trained_package(tmp_path, run, training=TRAINING, folds=2):
    """Train ``run`` on two folds of the tiny cohort, write the folds' outputs and package them."""
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
    parts = [ids[k::folds] for k in range(folds)]
    metas, tables, sources = [], [], []
    for k, held in enumerate(parts):
        train = [p for p in ids if p not in held]
        result, meta = train_model(data, model, k, train, held, training)
        folder = tmp_path / run / f"fold_{k}"
        paths = {key: folder / name for key, name in FILES.items()}
        write_fold_outputs(paths, result, meta, data)
        metas.append(json.loads(paths["meta"].read_text()))
        tables.append(pd.concat([read_predictions(paths["predictions_train"]), read_predictions(paths["predictions"])]))
        sources.append((paths["weights"], paths["scaling"]))
    columns = {name: [f"g{i}_{j}" for j in range(m.shape[1])] for i, (name, m) in enumerate(data.families.items())}
    provenance = {
        "modalities": list(used),
        "genomics_columns": columns if "genomics" in used else {},
        "mri_sequences": [],
        "encoder": ENCODER if "wsi" in used else None,
    }
    edges = time_bin_edges(outcomes["survival_months"].to_numpy(), outcomes["censorship"].to_numpy(), training.n_bins)
    manifest = assemble_manifest("tiny", run, "ensemble", metas, tables, edges, run != "coxph", provenance)
    write_package(tmp_path / "package", manifest, sources)
    return data, parts


@pytest.mark.parametrize("run", ["deref", "snn", "coxph"])
def test_a_package_scores_held_out_patients_exactly_as_the_fold_models(tmp_path, run):
    data, parts = trained_package(tmp_path, run)
    package = read_package(tmp_path / "package")
    scores = score(package, data)
    for k, held in enumerate(parts):
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
outcomes, slides, _ = tiny_cohort(Path({str(tmp_path / 'again')!r}))
data = load_cohort_data(outcomes, slides, genomics=Path({str(tmp_path / 'again')!r}) / "pathways.h5")
write_tsv(score(read_package({str(tmp_path / 'package')!r}), data).table, {str(tmp_path / 'fresh.tsv')!r})
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
    with pytest.raises(PackageError, match="member_1.weights.safetensors: sha256 .* differs"):
        read_package(folder)
    with pytest.raises(PackageError, match="no manifest.json"):
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
    columns = {"one": ["A_rnaseq", "B_rnaseq"], "two": ["C_cnv", "D_cnv"]}
    with pytest.raises(GenomicsError, match=r"1 of the package's 4 genomic columns are missing: D_cnv.*impute: training_mean"):
        package_pathways(table, ["N1", "N2"], columns)
    with pytest.raises(GenomicsError, match="missing value in column 'B_rnaseq' for patient N2"):
        package_pathways(table, ["N1", "N2"], {"one": ["A_rnaseq", "B_rnaseq"]})
    with pytest.raises(GenomicsError, match="no genomics for new patient.*N3"):
        package_pathways(table, ["N1", "N3"], {"one": ["A_rnaseq"]})
    matrices, families = package_pathways(table, ["N2", "N1"], columns, impute="training_mean")
    np.testing.assert_array_equal(matrices["one"], [[2.0, np.nan], [1.0, 3.0]])
    assert np.isnan(matrices["two"][:, 1]).all() and families[1].missing_genes == ["D_cnv"]


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
