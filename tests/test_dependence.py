"""Linear CKA and the k-nearest-neighbour mutual information, against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm, special_ortho_group

from model.dependence import cka_matrix, linear_cka, mutual_information, normalised_mutual_information
from model.metrics import NotComputable


def test_cka_of_a_representation_with_itself_is_one():
    x = np.random.default_rng(0).standard_normal((100, 8))
    assert linear_cka(x, x) == pytest.approx(1.0)


def test_cka_ignores_rotation_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 6))
    y = x[:, :4] @ rng.standard_normal((4, 5)) + 0.5 * rng.standard_normal((200, 5))
    rotation = special_ortho_group.rvs(5, random_state=2)
    before = linear_cka(x, y)
    assert 0.2 < before < 0.99
    assert linear_cka(x, 3.7 * y @ rotation) == pytest.approx(before)
    assert linear_cka(x + 5.0, y) == pytest.approx(before)  # columns are centred


def test_cka_of_independent_noise_is_small():
    rng = np.random.default_rng(3)
    assert linear_cka(rng.standard_normal((500, 5)), rng.standard_normal((500, 5))) < 0.2


def test_cka_matrix_is_symmetric_and_named():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((50, 3))
    features = {"shared": a, "explore": rng.standard_normal((50, 4)), "copy": 2 * a}
    table = cka_matrix(features)
    assert list(table.index) == list(table.columns) == ["shared", "explore", "copy"]
    np.testing.assert_allclose(table.to_numpy(), table.to_numpy().T)
    assert table.loc["shared", "copy"] == pytest.approx(1.0)
    assert table.loc["shared", "explore"] == pytest.approx(linear_cka(a, features["explore"]))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.ones((10, 2)), np.ones((9, 2)), "different samples"),
        (np.ones((1, 2)), np.ones((1, 2)), "at least 2"),
        (np.ones((10, 2)), np.arange(20.0).reshape(10, 2), "constant"),
    ],
)
def test_cka_refuses_undefined_cases(x, y, message):
    with pytest.raises(ValueError, match=message):
        linear_cka(x, y)


def true_mi(mu: float) -> float:
    """MI (nats) of X and an equiprobable class C with X | C ~ N(±mu, 1), by numerical integration.

    I = E[log p(x | c) / p(x)]; by symmetry both classes contribute alike, and p(x | +) / p(x)
    = 2 / (1 + exp(-2 mu x)).
    """
    value, _ = integrate.quad(lambda x: norm.pdf(x, mu) * (np.log(2) - np.logaddexp(0, -2 * mu * x)), -np.inf, np.inf)
    return value


@pytest.mark.parametrize("mu", [1.0, 2.0])
def test_mi_matches_the_integrated_truth(mu):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 4000)
    x = rng.standard_normal(4000) + np.where(labels == 1, mu, -mu)
    assert abs(mutual_information(x, labels) - true_mi(mu)) < 0.03


def test_mi_of_independent_features_is_near_zero():
    rng = np.random.default_rng(6)
    assert mutual_information(rng.standard_normal((2000, 3)), rng.integers(0, 3, 2000)) < 0.02


def test_mi_is_unchanged_by_feature_scale_and_constant_columns():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 500)
    x = rng.standard_normal((500, 2)) + labels[:, None]
    scaled = np.column_stack([1000 * x[:, 0], x[:, 1], np.full(500, 3.0)])
    assert mutual_information(scaled, labels) == pytest.approx(mutual_information(x, labels))


def test_perfectly_separated_classes_have_nmi_near_one():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 500)
    x = rng.standard_normal((500, 2)) + 20 * labels[:, None]
    assert normalised_mutual_information(x, labels) > 0.9


def test_nmi_uses_the_entropy_of_the_labels_kept():
    rng = np.random.default_rng(9)
    labels = np.append(rng.integers(0, 2, 300), 7)  # label 7 occurs once: dropped, as Ross does
    x = rng.standard_normal(301) + 1.5 * (labels == 1)
    kept = labels != 7
    p = np.bincount(labels[kept]) / kept.sum()
    expected = mutual_information(x[kept], labels[kept]) / -(p * np.log(p)).sum()
    assert normalised_mutual_information(x, labels) == pytest.approx(expected)
    assert mutual_information(x, labels) == pytest.approx(mutual_information(x[kept], labels[kept]))


def test_mi_needs_two_labels_and_shrinks_k_for_small_labels():
    x = np.random.default_rng(10).standard_normal((20, 2))
    with pytest.raises(NotComputable, match="fewer than 2 labels"):
        mutual_information(x, np.zeros(20))
    with pytest.raises(NotComputable, match="fewer than 2 labels"):
        mutual_information(x, np.r_[np.zeros(19), 1])  # the singleton is dropped
    # a label with at most k samples uses k = its count - 1 (as scikit-learn): still an estimate,
    # high when that label is well separated
    small = np.r_[np.zeros(17), np.ones(3)]
    separated = np.c_[small * 10 + np.random.default_rng(3).standard_normal(20)]
    assert mutual_information(separated, small, k=3) > 0.3
    assert np.isfinite(mutual_information(x, small, k=3))
    with pytest.raises(NotComputable, match="constant"):
        mutual_information(np.ones((20, 2)), np.r_[np.zeros(10), np.ones(10)])
