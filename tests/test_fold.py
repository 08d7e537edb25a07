"""One fold from files to outputs: cohort data, per-fold standardisation, settings, splits, outputs."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace

import h5py
import jsonschema
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors import safe_open

from model.config import TrainingConfig, training_config
from model.coxph import CoxSettings
from model.data import DataError, Standardizer, fold_patients, load_cohort_data
from model.fold import fold_settings, train_model
from model.fold_outputs import (
    FILES,
    load_weights,
    read_bin_edges,
    read_log,
    read_predictions,
    save_weights,
    write_fold_outputs,
)
from model.registry import MODELS, Inputs, ModelChoice, applies, build_model, cohort_models, uses
from model.splits import cohort_splits, read_mcat_split, write_mcat_split
from model.train import TrainSettings, predict, train_network
from model.variants import plain
from tests.conftest import ROOT
from workflow.genomics import Family, write_pathways
from workflow.roi_file import PatientROI, gather_rois, write_excluded_roi, write_patient_roi

SIZES = [3, 4, 2, 5, 3, 4]
TRAINING = TrainingConfig(epochs=2, inner_fraction=0.25, device="cpu", selection="last")
SCHEMA = yaml.safe_load((ROOT / "config" / "schemas" / "config.schema.yaml").read_text())["properties"]


def write_features(path, n, dim=16, seed=0, encoder="resnet50_trunc"):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=rng.standard_normal((n, dim)).astype(np.float32))
        h5.create_dataset("coords", data=np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 256)
        h5.attrs["encoder"] = encoder


def tiny_cohort(tmp_path, n=20, seed=0):
    """n patients (P0 has two slides), 16-d features, six small gene families with a planted shift."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i}" for i in range(n)]
    outcomes = pd.DataFrame(
        {"survival_months": rng.exponential(20, n) + 1, "censorship": rng.permutation(np.arange(n) % 2)}, index=ids
    )
    slides = {}
    for i, p in enumerate(ids):
        files = [(f"{p}-A", tmp_path / f"{p}-A.h5")] + ([(f"{p}-B", tmp_path / f"{p}-B.h5")] if i == 0 else [])
        for k, (_, path) in enumerate(files):
            write_features(path, 5 + i % 4 + k, seed=10 * i + k)
        slides[p] = files
    families = [Family(f"family {k}", [f"g{k}_{j}" for j in range(d)], d, [], []) for k, d in enumerate(SIZES)]
    matrices = {f.name: rng.normal(100, 5, (n, d)).astype(np.float32) for f, d in zip(families, SIZES, strict=True)}
    # Stored in reverse patient order: the loader must reorder rows by patient ID.
    write_pathways(tmp_path / "pathways.h5", {k: v[::-1] for k, v in matrices.items()}, families, ids[::-1], {})
    return outcomes, slides, matrices


def test_cohort_data_bags_and_per_fold_standardisation(tmp_path):
    outcomes, slides, matrices = tiny_cohort(tmp_path)
    data = load_cohort_data(outcomes, slides, genomics=tmp_path / "pathways.h5")
    assert np.array_equal(data.families["family 2"], matrices["family 2"])
    assert data.wsi_dim == 16 and data.omic_sizes == tuple(SIZES)
    assert data.bags["P0"].shape == (11, 16) and list(data.patches["P0"]["slide_id"].unique()) == ["P0-A", "P0-B"]
    train, held, _ = fold_patients(data, [f"P{i}" for i in range(15)], ["P15", "P16"], "genomics")
    stacked = np.stack([p.second[1].numpy() for p in train])
    assert np.allclose(stacked.mean(0), 0, atol=1e-5) and np.allclose(stacked.std(0), 1, atol=1e-4)
    assert abs(float(held[0].second[1].mean())) < 5  # held-out patients use the training fit, not their own
    with pytest.raises(DataError, match="not in the cohort"):
        fold_patients(data, ["P1", "Q9"], ["P2"])


def test_standardizer_fits_on_training_patients_only():
    rng = np.random.default_rng(0)
    train, test = rng.normal(5, 3, size=(50, 4)), rng.normal(5, 3, size=(10, 4))
    train[:, 3] = 1.0
    scaler = Standardizer().fit(train)
    z = scaler.transform(train)
    assert np.allclose(z[:, :3].mean(0), 0, atol=1e-6) and np.allclose(z[:, :3].std(0), 1, atol=1e-5)
    assert np.allclose(z[:, 3], 0)  # constant column: unit scale, no division by zero
    assert np.allclose(
        scaler.transform(test), (test - train.mean(0)) / np.where(train.std(0) > 0, train.std(0), 1), atol=1e-5
    )
    clipped = Standardizer(clip=1.0).fit(train).transform(test * 100)
    assert clipped.max() <= 1.0 and clipped.min() >= -1.0


def test_wsi_standardisation_uses_the_training_patches_only(tmp_path):
    outcomes, slides, _ = tiny_cohort(tmp_path)
    data = load_cohort_data(outcomes, slides)
    assert data.modalities == ("wsi",) and data.families == {}
    train_ids, held_ids = [f"P{i}" for i in range(12)], ["P12", "P13"]
    raw = torch.cat([data.bags[p] for p in train_ids]).double()
    train, held, _ = fold_patients(data, train_ids, held_ids, wsi_standardise=True)
    patches = torch.cat([p.bag for p in train]).double()
    assert torch.allclose(patches.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(patches.std(0, unbiased=False), torch.ones(16, dtype=torch.float64), atol=1e-4)
    expected = (data.bags["P12"].double() - raw.mean(0)) / raw.std(0, unbiased=False)
    assert torch.allclose(held[0].bag.double(), expected, atol=1e-5) and held[0].second == []
    untouched, _, _ = fold_patients(data, train_ids, held_ids)
    assert untouched[0].bag is data.bags["P0"]


def test_cohort_data_errors_name_what_is_wrong(tmp_path):
    outcomes, slides, _ = tiny_cohort(tmp_path)
    with pytest.raises(DataError, match=r"no genomics for patient\(s\) \['X1'\]"):
        load_cohort_data(
            pd.concat([outcomes, outcomes.iloc[:1].rename(index={"P0": "X1"})]),
            slides | {"X1": slides["P1"]},
            genomics=tmp_path / "pathways.h5",
        )
    with pytest.raises(DataError, match="have no slide features"):
        load_cohort_data(outcomes, {k: v for k, v in slides.items() if k != "P3"}, genomics=tmp_path / "pathways.h5")
    write_features(tmp_path / "other.h5", 4, encoder="uni")
    with pytest.raises(DataError, match="different encoders"):
        load_cohort_data(
            outcomes, slides | {"P2": [("P2-A", tmp_path / "other.h5")]}, genomics=tmp_path / "pathways.h5"
        )
    write_features(tmp_path / "empty.h5", 0)
    with pytest.raises(DataError, match="patient P2: no patch features"):
        load_cohort_data(
            outcomes, slides | {"P2": [("P2-A", tmp_path / "empty.h5")]}, genomics=tmp_path / "pathways.h5"
        )


def test_patients_without_a_usable_slide_leave_slide_models_only(tmp_path):
    """on_error: exclude: a patient whose every slide was excluded is left out of a model reading slides."""
    outcomes, slides, matrices = tiny_cohort(tmp_path)
    excluded = tmp_path / "P3-A.h5"
    with h5py.File(excluded, "w") as h5:
        h5.create_dataset("features", data=np.empty((0, 16), np.float32))
        h5.create_dataset("coords", data=np.empty((0, 2), np.int64))
        h5.attrs.update({"encoder": "resnet50_trunc", "status": "excluded", "reason": "non-pyramidal TIFF"})
    # P0 keeps the slide that is not excluded; P3 has none left
    slides = slides | {"P0": [("P0-A", excluded), slides["P0"][1]], "P3": [("P3-A", excluded)]}
    data = load_cohort_data(outcomes, slides, genomics=tmp_path / "pathways.h5")
    assert data.excluded == {"P3": "slide P3-A excluded: non-pyramidal TIFF"}
    assert "P3" not in data.outcomes.index and "P3" not in data.bags and data.bags["P0"].shape == (6, 16)
    kept = [p for p in outcomes.index if p != "P3"]
    assert np.array_equal(data.families["family 1"], matrices["family 1"][[outcomes.index.get_loc(p) for p in kept]])
    train_ids, held_ids = [f"P{i}" for i in range(4, 20)], ["P0", "P1", "P2", "P3"]
    result, meta = train_model(data, plain("abmil"), 0, train_ids, held_ids, TRAINING)
    assert sorted(result.predictions["patient_id"]) == ["P0", "P1", "P2"]
    assert meta["excluded_patients"] == {"P3": "slide P3-A excluded: non-pyramidal TIFF"}
    assert meta["excluded_held_out"] == ["P3"] and meta["n_held_out"] == 3
    # a genomics-only model is given no slides, so it keeps P3
    genomics = load_cohort_data(outcomes, genomics=tmp_path / "pathways.h5")
    result, meta = train_model(genomics, plain("snn"), 0, train_ids, held_ids, TRAINING)
    assert "P3" in set(result.predictions["patient_id"]) and meta["excluded_patients"] == {}
    # too few events left to define the bins: the error names the fold and who was left out
    few = {p: [("x", excluded)] for p in outcomes.index[outcomes["censorship"] == 0][1:]}
    with pytest.raises(DataError, match=r"fold 0: .* after leaving out \d+ patient\(s\) without usable inputs"):
        train_model(load_cohort_data(outcomes, slides | few), plain("abmil"), 0, list(outcomes.index[2:]), [], TRAINING)


def test_patients_without_a_usable_mri_leave_mri_models_only(tmp_path):
    """mri_roi: on_error: exclude: roi.h5 lists P2 apart; a model reading MRI (and slides) leaves P2 out."""
    outcomes, slides, _ = tiny_cohort(tmp_path, n=4)
    rng = np.random.default_rng(0)
    paths = []
    for p in outcomes.index:
        path = tmp_path / f"{p}.roi.h5"
        if p == "P2":
            write_excluded_roi(path, p, "patient P2: tumour mask m.nii.gz is empty", ["t1", "t2"])
        else:
            roi = PatientROI(
                rng.standard_normal((2, 4, 4, 4)).astype(np.float32),
                np.ones((4, 4, 4), np.uint8),
                *(np.ones(2, bool), np.zeros(3), np.ones(3), np.eye(3).ravel(), np.zeros((2, 3))),
            )
            write_patient_roi(path, p, roi, ["t1", "t2"])
        paths.append(path)
    gather_rois(paths, tmp_path / "roi.h5", {"cohort": "c"})
    data = load_cohort_data(outcomes, slides, mri=tmp_path / "roi.h5")
    assert data.excluded == {"P2": "MRI excluded: patient P2: tumour mask m.nii.gz is empty"}
    assert list(data.outcomes.index) == ["P0", "P1", "P3"] and data.mri.shape == (3, 2, 4, 4, 4)
    assert "P2" not in data.bags and sorted(data.bags) == ["P0", "P1", "P3"]
    assert sorted(load_cohort_data(outcomes, slides).bags) == ["P0", "P1", "P2", "P3"]  # slides only: P2 stays


def test_reference_preset_settings():
    settings, choice, bins = fold_settings(replace(TRAINING, preset="reference"), "deref", fold=2)
    assert settings.scheduler == "poly" and settings.weighted_sampling and settings.max_patches == 30000
    assert settings.seed == 3 and choice.rfr() == "random" and bins == "cohort"
    settings, choice, bins = fold_settings(replace(TRAINING, preset="reference", bins="fold"), "hdmoe", fold=0)
    assert settings.max_patches is None and bins == "fold"
    settings, choice, bins = fold_settings(TRAINING, "deref", fold=0)
    assert settings.scheduler == "none" and choice.rfr() == "average" and bins == "fold"


def test_presets_choose_the_regime_of_null_keys():
    defaults = TrainingConfig()  # every regime key null: the preset decides
    assert all(getattr(defaults, k) is None for k in ("selection", "batch_size", "l1", "wsi_standardise", "bins"))
    paper, _, _ = fold_settings(defaults, "snn", fold=0)
    assert (paper.batch_size, paper.l1, paper.selection, paper.ensemble_size) == (32, 1e-4, "ensemble", 5)
    assert defaults.resolved().wsi_standardise is True
    reference = replace(defaults, preset="reference")
    settings, _, _ = fold_settings(reference, "snn", fold=0)
    assert (settings.batch_size, settings.l1, settings.selection) == (1, 0.0, "last")
    assert reference.resolved().wsi_standardise is False
    explicit, _, _ = fold_settings(replace(reference, batch_size=8, selection="inner"), "snn", 0)
    assert (explicit.batch_size, explicit.selection) == (8, "inner")


def test_training_config_from_the_config_block():
    training = training_config({"models": ["snn", "coxph"], "l1": 0, "coxph": None, "folds": 3})
    assert training.models == ("snn", "coxph") and training.folds == 3 and training.epochs == 30
    assert isinstance(training.l1, float) and training.coxph == {}
    assert training_config({}) == TrainingConfig()
    with pytest.raises(ValueError, match=r"unknown training settings: \['epoch'\]"):
        training_config({"epoch": 3})
    with pytest.raises(ValueError, match=r"training\.bins 'patient'"):
        TrainingConfig(bins="patient")
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['cox'\]"):
        TrainingConfig(models=("cox",))


def test_schema_describes_the_training_config_whose_defaults_it_leaves_to_it():
    """The schema validates training:, TrainingConfig (and CoxSettings) hold its defaults: the same keys."""
    training = SCHEMA["training"]["properties"]
    assert set(training) == {f.name for f in fields(TrainingConfig)}
    assert set(training["coxph"]["properties"]) == {f.name for f in fields(CoxSettings)}
    assert not [k for k, spec in training.items() if "default" in spec]
    assert not [k for k, spec in training["coxph"]["properties"].items() if "default" in spec]
    # the defaults themselves pass the schema
    jsonschema.validate(json.loads(json.dumps(asdict(TrainingConfig()))), SCHEMA["training"])


def test_schema_model_names_are_the_registry():
    assert SCHEMA["training"]["properties"]["models"]["items"]["enum"] == list(MODELS)
    assert TrainingConfig().models == tuple(MODELS)
    cohort = SCHEMA["cohorts"]["additionalProperties"]["properties"]
    assert set(cohort["models"]["items"]["enum"]) == set(MODELS)
    assert set(SCHEMA["evaluation"]["properties"]["reference_model"]["enum"]) == set(MODELS)


def test_cohort_models_skip_what_the_modalities_cannot_train_unless_the_cohort_asks():
    everything = list(MODELS)
    assert cohort_models("c", ["genomics"], None, everything) == ["snn", "snn_trans", "coxph"]
    assert cohort_models("c", ["wsi", "mri"], ["abmil", "coxph"], everything) == ["abmil", "coxph"]
    with pytest.raises(ValueError, match=r"^cohort tcga: models \['mri_resnet'\] need .* from cohorts\.tcga\.models$"):
        cohort_models("tcga", ["wsi", "genomics"], ["snn", "mri_resnet"], everything)


def test_registry_knows_what_each_model_needs():
    assert applies("snn", {"wsi", "genomics"}) and not applies("snn", {"wsi", "mri"})
    assert applies("deref", {"wsi", "mri"}) and applies("mri_resnet", {"wsi", "mri"})
    with pytest.raises(ValueError, match="needs"):
        build_model("snn", Inputs(("wsi", "mri"), 16, (), 5), ModelChoice())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("cox", Inputs(("wsi", "genomics"), 16, tuple(SIZES)), ModelChoice())
    assert uses("snn", ["wsi", "genomics"]) == ("genomics",) and uses("deref", ["mri", "wsi"]) == ("wsi", "mri")
    assert uses("coxph", ["mri", "genomics"]) == ("genomics", "mri") and uses("abmil", ["wsi"]) == ("wsi",)
    assert applies("snn", ["genomics"]) and not applies("deref", ["genomics"]) and applies("coxph", ["mri"])
    with pytest.raises(ValueError, match="needs"):
        uses("deref", ["genomics", "mri"])
    with pytest.raises(ValueError, match="not a network"):
        build_model("coxph", Inputs(("genomics",), 0, tuple(SIZES)), ModelChoice())
    for name in MODELS:
        if applies(name, {"wsi", "genomics"}) and MODELS[name].build is not None:
            model = build_model(name, Inputs(("wsi", "genomics"), 16, tuple(SIZES)), ModelChoice(seed=4))
            out = model.eval()(torch.randn(1, 9, 16), [torch.randn(1, d) for d in SIZES])
            assert out["hazards"].shape == (1, 4), name


def test_fold_outputs_round_trip(tmp_path):
    outcomes, slides, _ = tiny_cohort(tmp_path)
    data = load_cohort_data(outcomes, slides, genomics=tmp_path / "pathways.h5")
    ids = list(outcomes.index)
    result, meta = train_model(data, plain("deref"), 0, ids[4:], ids[:4], TRAINING)
    assert meta["selected_epoch"] == 1 and meta["bins"] == "fold" and meta["n_held_out"] == 4
    outputs = {key: str(tmp_path / "out" / name) for key, name in FILES.items()}
    with pytest.raises(ValueError, match="fold outputs"):
        write_fold_outputs({k: v for k, v in outputs.items() if k != "details"}, result, meta, data)
    write_fold_outputs(outputs, result, meta, data)
    predictions = read_predictions(outputs["predictions"])
    assert list(predictions["patient_id"]) == ids[:4] and {"gate_0", "hazard_3", "fold", "epoch"} <= set(predictions)
    trained = read_predictions(outputs["predictions_train"])
    assert list(trained["patient_id"]) == ids[4:] and list(trained.columns) == list(predictions.columns)
    assert np.array_equal(read_bin_edges(outputs["meta"]), meta["bin_edges"])
    assert list(read_log(outputs["log"])["epoch"]) == [0, 1]
    with h5py.File(outputs["details"]) as h5:
        p0 = h5["P0"]
        assert p0["attention"].shape == (11,) and p0["coords"].shape == (11, 2)
        assert {"genomic", "pathology", "shared", "explore", "gate"} <= set(p0)
        assert p0["slide_id"][-1].decode() == "P0-B"
    with open(outputs["meta"]) as handle:
        assert json.load(handle)["model"] == "deref"
    # Weights reload into a fresh model (safetensors, no pickle) and give the same predictions.
    fresh = build_model("deref", Inputs(("wsi", "genomics"), 16, tuple(SIZES)), ModelChoice(seed=99))
    load_weights(fresh, outputs["weights"])
    _, held, _ = fold_patients(data, ids[4:], ids[:4], "genomics", wsi_standardise=True)
    again, _ = predict(fresh, held)
    assert np.allclose(again["risk"], predictions["risk"], atol=1e-6)


def test_inner_selection_and_optimistic_pick(tmp_path):
    outcomes, slides, _ = tiny_cohort(tmp_path)
    data = load_cohort_data(outcomes, slides, genomics=tmp_path / "pathways.h5")
    ids = list(outcomes.index)
    chosen = {"selection": "inner", "epochs": 3, "inner_metric": "c_index"}
    result, meta = train_model(data, plain("abmil"), 0, ids[4:], ids[:4], replace(TRAINING, **chosen))
    assert meta["n_inner"] == 4 and meta["n_train"] == 12 and "inner_c_index" in result.log
    assert result.selected_epoch == int(result.log["inner_c_index"].idxmax())
    result, _ = train_model(
        data, plain("abmil"), 0, ids[4:], ids[:4], replace(TRAINING, **chosen | {"inner_metric": "loss"})
    )
    assert result.selected_epoch == int(result.log["inner_loss"].idxmin())
    assert result.best_epoch == int(result.log["held_out_c_index"].idxmax())


def test_patch_cap_keeps_attention_aligned(tmp_path):
    outcomes, slides, _ = tiny_cohort(tmp_path)
    data = load_cohort_data(outcomes, slides, genomics=tmp_path / "pathways.h5")
    train, held, _ = fold_patients(data, list(outcomes.index)[2:], ["P0", "P1"], "genomics")
    model = build_model("abmil", Inputs(("wsi", "genomics"), 16, tuple(SIZES)), ModelChoice())
    result = train_network(
        lambda _: model, train, held, np.array([0, 5, 10, 20, 1e3]), TrainSettings(epochs=1, max_patches=4)
    )
    assert result.details["P0"]["attention"].shape == (4,)
    assert sorted(result.details["P0"]["patch_rows"]) == list(result.details["P0"]["patch_rows"])


def test_splits_stratified_or_from_mcat_files(tmp_path):
    rng = np.random.default_rng(0)
    outcomes = pd.DataFrame(
        {"survival_months": rng.exponential(20, 40), "censorship": np.arange(40) % 2},
        index=[f"P{i}" for i in range(40)],
    )
    folds = cohort_splits(outcomes, 5, seed=3)
    assert sorted(p for _, held in folds for p in held) == sorted(outcomes.index)
    for k, (train, held) in enumerate(folds):
        write_mcat_split(tmp_path / f"splits_{k}.csv", train, held)
        assert read_mcat_split(tmp_path / f"splits_{k}.csv") == (train, held)
    assert cohort_splits(outcomes, 5, seed=0, mcat_dir=tmp_path) == folds
    with pytest.raises(ValueError, match=r"splits_5\.csv is missing"):
        cohort_splits(outcomes, 6, seed=0, mcat_dir=tmp_path)
    with pytest.raises(ValueError, match=r"patients \['P0'\] are not in the cohort"):
        cohort_splits(outcomes.drop("P0"), 5, seed=0, mcat_dir=tmp_path)
    extra = pd.concat([outcomes, outcomes.iloc[:1].rename(index={"P0": "P40"})])
    with pytest.raises(ValueError, match=r"\['P40'\] of the cohort are in neither column"):
        cohort_splits(extra, 5, seed=0, mcat_dir=tmp_path)


def test_weights_files_are_identical_for_identical_tensors_and_metadata(tmp_path):
    """safetensors orders its header from a hash map; saved files must not depend on that or on dict order."""
    tensors = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3), "member_0.x": torch.zeros(2)}
    metadata = {"model": "deref", "fold": "0", "epoch": "3"}
    save_weights(tmp_path / "0.safetensors", tensors, metadata)
    blob = (tmp_path / "0.safetensors").read_bytes()
    for k in range(1, 8):  # the hash map's order changes from one save to the next, even in one process
        reordered = dict(reversed(list(tensors.items()))), dict(reversed(list(metadata.items())))
        save_weights(tmp_path / f"{k}.safetensors", *(reordered if k % 2 else (tensors, metadata)))
        assert (tmp_path / f"{k}.safetensors").read_bytes() == blob
    assert int.from_bytes(blob[:8], "little") % 8 == 0
    with safe_open(tmp_path / "0.safetensors", "pt") as weights:
        assert weights.metadata() == metadata
        assert torch.equal(weights.get_tensor("b.weight"), tensors["b.weight"])
