"""Experiment variants: the shipped catalogue parses, and a variant that changes nothing is an error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from model.config import TrainingConfig
from model.deref_options import DeReFOptions
from model.variants import Variant, parse_variant, plain, select_variants

CATALOGUE = yaml.safe_load((Path(__file__).parents[1] / "config" / "variants.yaml").read_text())
TRAINING = TrainingConfig()


def test_the_shipped_catalogue_holds_every_paper_ablation_and_parses():
    variants = select_variants(CATALOGUE, "all", TRAINING)
    by_table = {}
    for v in variants.values():
        for table in v.tables:
            by_table.setdefault(table, []).append(v.label)
    assert len(by_table["IV"]) == 6 and by_table["V"] == ["L1", "KL", "CoS"]
    assert by_table["VI"] == ["2", "8", "16", "32", "64"] and by_table["VII"] == ["2", "6", "8"]
    assert len(by_table["VIII"]) == 2 and by_table["IX"] == ["2", "3"]
    # each variant sorts its options into the right kind
    assert variants["deref_wo_rfr"].architecture == {"rfr": False}
    assert variants["deref_distance_kl"].training == {"decoupling_distance": "kl"}
    assert variants["deref_round_2"].split_seed == 2 and not variants["deref_round_2"].architecture


def test_a_variant_applies_its_training_overrides_only():
    variant = parse_variant("kl", {"model": "deref", "options": {"decoupling_distance": "kl"}}, TRAINING)
    assert variant.training_config(TRAINING) == replace(TRAINING, decoupling_distance="kl")
    assert plain("snn").training_config(TRAINING) == TRAINING


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": "deref", "options": {"rfr": True}}, r"changes nothing"),
        ({"model": "deref", "options": {"decoupling_distance": "mse"}}, r"changes nothing"),
        ({"model": "deref", "options": {"split_seed": 1}}, r"changes nothing"),
        ({"model": "deref", "options": {"n_expert": 6}}, r"unknown option\(s\) \['n_expert'\]"),
        ({"model": "snn", "options": {"rfr": False}}, r"unknown option\(s\) \['rfr'\] for model snn"),
        ({"model": "deref", "options": {}}, r"no options"),
        ({"model": "dref", "options": {"rfr": False}}, r"not a registry model"),
        ({"model": "deref", "options": {"decoupler": "mlp"}}, r"decoupler='mlp'"),
        ({"model": "deref", "options": {"rfr": False}, "tables": ["XI"]}, r"tables \['XI'\]"),
    ],
)
def test_a_bad_variant_is_an_error_naming_it(spec, message):
    with pytest.raises(ValueError, match=r"variant typo: .*" + message):
        parse_variant("typo", spec, TRAINING)


def test_a_variant_may_not_take_a_model_name():
    with pytest.raises(ValueError, match="registry model's"):
        parse_variant("deref", {"model": "deref", "options": {"rfr": False}}, TRAINING)


def test_expert_counts_need_the_paper_gate_under_the_reference_preset():
    reference = replace(TRAINING, preset="reference")
    with pytest.raises(ValueError, match="reference gate"):
        parse_variant("e6", {"model": "deref", "options": {"n_experts": 6}}, reference)
    variant = parse_variant("e6", {"model": "deref", "options": {"n_experts": 6, "gate": "paper"}}, reference)
    assert variant.architecture == {"n_experts": 6, "gate": "paper"}
    # under the reference preset its own values change nothing
    with pytest.raises(ValueError, match=r"\['final_relu'\].*changes nothing"):
        parse_variant("relu", {"model": "deref", "options": {"final_relu": True}}, reference)


def test_selection_names_must_be_in_the_catalogue():
    with pytest.raises(ValueError, match=r"\['deref_wo_rfrr'\]"):
        select_variants(CATALOGUE, ["deref_wo_rfrr"], TRAINING)
    assert list(select_variants(CATALOGUE, ["deref_wo_moe", "deref_wo_rfr"], TRAINING)) == [
        "deref_wo_rfr",
        "deref_wo_moe",
    ]


def test_a_variant_records_what_was_run():
    variant = select_variants(CATALOGUE, ["deref_segment_8"], TRAINING)["deref_segment_8"]
    assert variant.as_dict() == {
        "name": "deref_segment_8",
        "model": "deref",
        "architecture": {"segment_length": 8},
        "training": {},
        "split_seed": None,
    }
    assert Variant(**{**variant.__dict__}) == variant
    assert DeReFOptions(**variant.architecture).segment_length == 8


def test_an_authors_regime_may_repeat_some_config_values_but_not_all():
    regime = select_variants(CATALOGUE, ["mcat_authors"], TRAINING)["mcat_authors"]
    assert regime.training["weight_decay"] == TRAINING.weight_decay and regime.training["lr"] == 2e-4
    with pytest.raises(ValueError, match="changes nothing"):
        parse_variant("same", {"model": "mcat", "options": {"weight_decay": TRAINING.weight_decay}}, TRAINING)


def test_a_comparison_methods_options_are_checked_against_its_defaults():
    variant = parse_variant("blca_ot", {"model": "motcat", "options": {"ot_reg": 0.05}}, TRAINING)
    assert variant.architecture == {"ot_reg": 0.05} and not variant.training
    with pytest.raises(ValueError, match="changes nothing"):
        parse_variant("same_ot", {"model": "motcat", "options": {"ot_reg": 0.1}}, TRAINING)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ot_reg'\] for model cmta"):
        parse_variant("cmta_ot", {"model": "cmta", "options": {"ot_reg": 0.05}}, TRAINING)


def test_each_authors_regime_gives_valid_fold_settings():
    from model.fold import fold_settings

    demo = TrainingConfig(selection="last", batch_size=1, epochs=5)  # the demo config's regime
    regimes = {n: v for n, v in select_variants(CATALOGUE, "all", demo).items() if n.endswith("_authors")}
    methods = {"mcat", "motcat", "cmta", "pibd", "ccl", "mome", "clam_sb", "clam_mb"}
    assert {v.model for v in regimes.values()} == methods and not any(v.tables for v in regimes.values())
    for variant in regimes.values():
        settings, _, _ = fold_settings(variant.training_config(demo), variant.model, fold=0)
        assert {k: getattr(settings, k) for k in ("lr", "epochs", "batch_size")} == {
            k: variant.training[k] for k in ("lr", "epochs", "batch_size")
        }
        assert settings.weighted_sampling == variant.training["weighted_sampling"]
    cmta, _, _ = fold_settings(regimes["cmta_authors"].training_config(demo), "cmta", fold=0)
    assert (cmta.optimiser, cmta.momentum, cmta.scheduler) == ("sgd", 0.9, "none")
    clam, _, _ = fold_settings(regimes["clam_sb_authors"].training_config(demo), "clam_sb", fold=0)
    assert (clam.selection, clam.patience) == ("inner", 20)  # early stopping needs an inner split
