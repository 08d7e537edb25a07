"""A config mistake is told in one line per problem, with the nearest valid key or value."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_workflow import SNAKEMAKE, run, tiny_config
from workflow.config_check import ConfigError, check_config, config_problems
from workflow.features.encoders import WeightsError, encoder_spec

SCHEMA_PATH = ROOT / "config" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_the_default_config_has_no_problem():
    assert config_problems(DEFAULT, SCHEMA) == []


def test_each_problem_is_one_line_with_the_nearest_key_or_value():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["tiling"]["on_eror"] = config["tiling"].pop("on_error")
    config["tiling"]["preset"] = "tgca"
    config["training"]["epochs"] = "thirty"
    config["cohorts"]["demo_tcga"]["demo"]["sede"] = 1
    problems = config_problems(config, SCHEMA)
    assert len(problems) == 4 and all("\n" not in p for p in problems)
    text = "\n".join(problems)
    assert "cohorts.demo_tcga.demo.sede: unknown key; did you mean 'seed'?" in text
    assert "tiling.on_eror: unknown key; did you mean 'on_error'? (keys of tiling: preset, " in text
    assert "tiling.preset: 'tgca' is not one of ['tcga', 'bwh_biopsy', 'bwh_resection', 'clam_default']; " in text
    assert "did you mean 'tcga'?" in text
    assert "training.epochs: 'thirty' is not of type 'integer'" in text
    config["tiling"]["zzz"] = 1  # nothing close: no guess
    assert "tiling.zzz: unknown key (keys of tiling:" in "\n".join(config_problems(config, SCHEMA))
    with pytest.raises(ConfigError, match=r"config \(my.yaml\): 5 problem\(s\); keys and choices are explained in"):
        check_config(config, SCHEMA_PATH, ["my.yaml"])


def test_a_misspelled_encoder_gets_the_nearest_name():
    with pytest.raises(
        WeightsError, match=r"features: encoder: 'resnet50_trnc' is neither .* did you mean 'resnet50_trunc'"
    ):
        encoder_spec("resnet50_trnc")


@pytest.mark.integration
def test_a_misspelled_key_stops_the_dry_run_in_a_few_lines(tmp_path):
    config = tiny_config(tmp_path)
    config["tiling"] = {"on_eror": "exclude"}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = run([*SNAKEMAKE, "-n", "--directory", str(tmp_path)], tmp_path, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "tiling.on_eror: unknown key; did you mean 'on_error'?" in output
    assert len(output.splitlines()) < 15 and "Failed validating" not in output  # no schema dump
