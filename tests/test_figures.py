"""Figures: each writes a non-blank PNG and a PDF, returns the statistics it shows, and refuses empty input."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from scipy.stats import ttest_ind

from model.figures import FigureInputError
from model.figures.decoupled import decoupled_features_figure
from model.figures.gates import gate_weights_figure
from model.figures.survival import km_figure, risk_group_boxplot
from model.figures.training import cindex_curves, fold_training_curves
from workflow.plots import GROUP_COLOURS, PALETTE, STYLE, figure_style


def figure_paths(tmp_path, name):
    return [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]


def assert_drawn(tmp_path, name):
    png, pdf = figure_paths(tmp_path, name)
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    assert pdf.read_bytes()[:4] == b"%PDF"
    pixels = matplotlib.image.imread(png)[..., :3]
    assert pixels.min() < 0.5 and pixels.std() > 0.01  # drawn on, not blank
    assert not list(tmp_path.glob(".tmp*"))


def test_style_is_colour_blind_safe_and_restored():
    assert len(set(PALETTE)) == 8 and GROUP_COLOURS == {"high risk": "#D55E00", "low risk": "#0072B2"}
    before = matplotlib.rcParams["font.size"]
    with figure_style():
        assert matplotlib.rcParams["font.size"] == STYLE["font.size"]
        assert not matplotlib.rcParams["axes.spines.top"]
    assert matplotlib.rcParams["font.size"] == before


def test_km_figure(tmp_path):
    rng = np.random.default_rng(0)
    curves = {
        group: KaplanMeierFitter(label=group).fit(rng.exponential(scale, 30), rng.integers(0, 2, 30))
        for group, scale in (("high risk", 10), ("low risk", 30))
    }
    km_figure(curves, "demo_tcga: DeReF", 0.012, figure_paths(tmp_path, "km"))
    assert_drawn(tmp_path, "km")
    with pytest.raises(FigureInputError, match="no risk group"):
        km_figure({}, "empty", np.nan, figure_paths(tmp_path, "none"))


def test_risk_group_boxplot_matches_welch(tmp_path):
    rng = np.random.default_rng(1)
    risk = np.concatenate([rng.normal(1, 1, 25), rng.normal(0, 0.5, 20)])
    group = ["high risk"] * 25 + ["low risk"] * 20
    stats = risk_group_boxplot(risk, group, "demo_tcga: DeReF", figure_paths(tmp_path, "box"))
    assert_drawn(tmp_path, "box")
    expected = ttest_ind(risk[:25], risk[25:], equal_var=False)
    assert stats["t"] == pytest.approx(expected.statistic) and stats["p"] == pytest.approx(expected.pvalue)
    assert (stats["n_high"], stats["n_low"]) == (25, 20)


def test_risk_group_boxplot_with_a_lone_patient(tmp_path):
    stats = risk_group_boxplot(np.array([3.0, 1, 2, 0.5]), ["high risk", "low risk", "low risk", "low risk"], "one", [])
    assert np.isnan(stats["t"]) and np.isnan(stats["p"]) and (stats["n_high"], stats["n_low"]) == (1, 3)
    with pytest.raises(FigureInputError, match="no patients"):
        risk_group_boxplot(np.array([]), [], "empty", figure_paths(tmp_path, "none"))
    with pytest.raises(FigureInputError, match="unknown groups"):
        risk_group_boxplot(np.array([1.0]), ["medium"], "bad", [])


def fold_log(seed, members=1, inner=False):
    rng = np.random.default_rng(seed)
    epochs = np.arange(8)
    log = pd.DataFrame(
        {
            "epoch": np.tile(epochs, members),
            "member": np.repeat(np.arange(members), len(epochs)),
            "loss": np.tile(2 * np.exp(-epochs / 3), members) + rng.uniform(0, 0.1, members * len(epochs)),
            "train_c_index": rng.uniform(0.5, 0.9, members * len(epochs)),
            "held_out_c_index": rng.uniform(0.4, 0.7, members * len(epochs)),
        }
    )
    if inner:
        log["inner_loss"] = log["loss"] + 0.2
        log["inner_c_index"] = log["held_out_c_index"] + 0.05
    return log


def test_cindex_curves(tmp_path):
    cindex_curves([fold_log(s) for s in range(3)], "demo_tcga: DeReF", figure_paths(tmp_path, "c"))
    assert_drawn(tmp_path, "c")
    with pytest.raises(FigureInputError, match="no fold logs"):
        cindex_curves([], "empty", figure_paths(tmp_path, "none"))


def test_fold_training_curves_average_members(tmp_path):
    logs = [fold_log(s, members=3, inner=True) for s in range(5)]
    plotted = fold_training_curves(logs, "demo_tcga: DeReF", figure_paths(tmp_path, "curves"))
    assert_drawn(tmp_path, "curves")
    fold_2 = plotted[plotted["fold"] == 2].set_index("epoch")
    expected = logs[2].groupby("epoch")[["loss", "held_out_c_index", "inner_c_index"]].mean()
    pd.testing.assert_frame_equal(fold_2[expected.columns], expected)
    with pytest.raises(FigureInputError, match="fold 1 log has no epochs"):
        fold_training_curves([logs[0], logs[0].iloc[:0]], "empty fold", figure_paths(tmp_path, "none"))
    with pytest.raises(FigureInputError, match=r"lacks column.*held_out_c_index"):
        fold_training_curves([logs[0].drop(columns="held_out_c_index")], "no held-out", [])


def test_decoupled_features_figure(tmp_path):
    rng = np.random.default_rng(2)
    names = ["genomic-specific", "pathology-specific", "shared", "explore"]
    features = {name: rng.normal(3 * index, 1, (12, 16)) for index, name in enumerate(names)}
    cka = pd.DataFrame(rng.uniform(0, 1, (4, 4)), index=names, columns=names)
    embedding = decoupled_features_figure(features, cka, "demo_tcga: DeReF", figure_paths(tmp_path, "tsne"))
    assert_drawn(tmp_path, "tsne")
    assert embedding.shape == (48, 2) and np.isfinite(embedding).all()
    with pytest.raises(FigureInputError, match="no feature types"):
        decoupled_features_figure({}, cka, "empty", [])
    with pytest.raises(FigureInputError, match="1 patient"):
        decoupled_features_figure({n: f[:1] for n, f in features.items()}, cka, "one", [])
    with pytest.raises(FigureInputError, match="different numbers of patients"):
        decoupled_features_figure(features | {"shared": features["shared"][:5]}, cka, "mismatch", [])


def test_gate_weights_figure(tmp_path):
    rng = np.random.default_rng(3)
    gates = {cohort: rng.dirichlet([4, 2, 1, 1], size=n) for cohort, n in (("demo_tcga", 30), ("brca", 12))}
    table = gate_weights_figure(gates, "DeReF gate weights", figure_paths(tmp_path, "gates"))
    assert_drawn(tmp_path, "gates")
    assert len(table) == 8 and list(table.columns) == ["cohort", "expert", "mean", "std", "n"]
    brca = table[table["cohort"] == "brca"]
    np.testing.assert_allclose(brca["mean"], gates["brca"].mean(axis=0))
    np.testing.assert_allclose(brca["std"], gates["brca"].std(axis=0))
    assert (brca["n"] == 12).all()
    with pytest.raises(FigureInputError, match="gate weights of cohort demo_tcga: no patients"):
        gate_weights_figure({"demo_tcga": np.empty((0, 4))}, "empty", figure_paths(tmp_path, "none"))
    with pytest.raises(FigureInputError, match="no cohort"):
        gate_weights_figure({}, "none", [])
