"""The weights preflight (rule check_weights): files found in folders, checksums pinned and refused, wrong
architectures refused by name, hub offline, the report, and the rule itself."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace

import jsonschema
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from tests.conftest import ROOT
from workflow.features.checkpoints import read_checkpoint
from workflow.features.encoders import build_model, encoder_spec, load_encoder
from workflow.features.manifest import WeightsError, configured_weights_file, file_sha256, resolve_weights_file
from workflow.features.weights import REPORT_COLUMNS, check_weights, read_report, write_report


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny(name, size=28, **overrides):
    """The manifest entry with one block and a small input (test-only: real depths cost minutes)."""
    spec = encoder_spec(name)
    return replace(
        spec, create_kwargs={**spec.create_kwargs, "depth": 1, "img_size": size, **overrides}, input_size=size
    )


def save_state(spec, path, seed=0):
    torch.manual_seed(seed)
    state = build_model(spec)[1].state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def uni_file(tmp_path_factory):
    """Random weights of a one-block UNI (ViT-L/16) as <folder>/uni_v1/pytorch_model.bin."""
    folder = tmp_path_factory.mktemp("weights")
    return save_state(tiny("uni_v1", 32), folder / "uni_v1" / "pytorch_model.bin")


def test_folder_layouts_and_the_missing_file_message(tmp_path, uni_file):
    folder = uni_file.parent.parent
    assert resolve_weights_file("uni_v1", folder, "pytorch_model.bin") == uni_file  # <folder>/<encoder>/<file>
    assert resolve_weights_file("uni_v1", uni_file.parent, "pytorch_model.bin") == uni_file  # <folder>/<file>
    assert resolve_weights_file("uni_v1", uni_file, "pytorch_model.bin") == uni_file  # the file itself
    assert configured_weights_file("uni_v1", str(folder)) == str(uni_file)
    assert configured_weights_file("uni_v1", str(tmp_path)) is None  # not there yet: the check will say where from
    assert configured_weights_file("uni_v1", "random") is None and configured_weights_file("uni_v1", "hub") is None
    with pytest.raises(WeightsError) as refused:
        check_weights("virchow2", str(tmp_path))
    message = str(refused.value)
    assert f"encoder 'virchow2': no weights file in the folder {tmp_path}" in message
    assert (
        str(tmp_path / "virchow2" / "pytorch_model.bin") in message and str(tmp_path / "pytorch_model.bin") in message
    )
    assert "https://huggingface.co/paige-ai/Virchow2" in message and "gated" in message and "CC-BY-NC-ND-4.0" in message
    with pytest.raises(
        WeightsError, match=r"(?s)encoder 'phikon_v2': weights file .*nothing\.safetensors not found.*owkin/phikon-v2"
    ):
        check_weights("phikon_v2", str(tmp_path / "nothing.safetensors"))
    with pytest.raises(WeightsError, match="is not in the manifest"):
        check_weights("resnet18.a1_in1k", str(folder))


def test_unpinned_file_is_refused_with_its_checksum_until_the_config_pins_it(uni_file):
    spec = tiny("uni_v1", 32)
    assert encoder_spec("uni_v1").source.sha256 is None  # no published value found: never invented
    digest = sha256(uni_file)
    with pytest.raises(WeightsError) as refused:
        check_weights("uni_v1", str(uni_file), spec=spec)
    message = str(refused.value)
    assert f"encoder 'uni_v1': weights file {uni_file} has sha256 {digest}" in message
    assert f"`sha256: {digest}` under features:" in message and "MahmoodLab/UNI/blob/main/pytorch_model.bin" in message
    report, loaded = check_weights("uni_v1", str(uni_file), sha256=digest, spec=spec)
    assert (report.status, report.sha256, report.dim, loaded.dim) == ("verified-config", digest, 1024, 1024)


def test_wrong_checksum_is_refused_naming_encoder_and_file(tmp_path, uni_file):
    spec = tiny("uni_v1", 32)
    with pytest.raises(WeightsError) as refused:
        check_weights("uni_v1", str(uni_file), sha256="0" * 64, spec=spec)
    message = str(refused.value)
    assert f"encoder 'uni_v1': weights file {uni_file} has sha256 {sha256(uni_file)}" in message
    assert (
        "features: sha256: in the config expects " + "0" * 64 in message and "huggingface.co/MahmoodLab/UNI" in message
    )
    with pytest.raises(WeightsError, match=r"has sha256 .*, expected 1{64}"):
        load_encoder(spec, str(uni_file), expected_sha256="1" * 64)
    # the manifest's own pin: a file that is not the published resnet50.tv_in1k is refused
    other = save_state(encoder_spec("resnet50_trunc"), tmp_path / "resnet50_trunc" / "model.safetensors")
    with pytest.raises(WeightsError) as refused:
        check_weights("resnet50_trunc", str(tmp_path))
    message = str(refused.value)
    assert f"encoder 'resnet50_trunc': weights file {other} has sha256 {sha256(other)}, but the manifest" in message
    assert "expects 5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888" in message


def test_another_architectures_weights_are_refused_by_name(uni_file):
    digest = sha256(uni_file)
    with pytest.raises(WeightsError) as refused:  # UNI's ViT-L/16 is no H-optimus-0 (ViT-g/14, registers)
        check_weights("hoptimus0", str(uni_file), sha256=digest, spec=tiny("hoptimus0"))
    message = str(refused.value)
    assert f"encoder 'hoptimus0': weights file {uni_file} does not fit timm 'vit_giant_patch14_reg4_dinov2'" in message
    assert "another encoder" in message and "https://huggingface.co/bioptimus/H-optimus-0" in message
    with pytest.raises(WeightsError) as refused:  # a timm-layout file where a transformers Dinov2 one is expected
        check_weights("phikon_v2", str(uni_file), sha256=digest, spec=tiny("phikon_v2", 32))
    message = str(refused.value)
    assert f"encoder 'phikon_v2': weights file {uni_file}: not a transformers Dinov2 checkpoint" in message
    assert "owkin/phikon-v2" in message


def test_timm_model_outside_the_manifest_needs_a_pin_for_a_file(tmp_path):
    spec = encoder_spec("resnet18.a1_in1k", 64)
    path = tmp_path / "r18.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18.a1_in1k", num_classes=0).state_dict(), path)
    with pytest.raises(
        WeightsError, match=rf"encoder 'resnet18\.a1_in1k': weights file {path} has sha256 \w{{64}}, and no"
    ):
        check_weights("resnet18.a1_in1k", str(path), spec=spec)
    report, _ = check_weights("resnet18.a1_in1k", str(path), sha256=sha256(path), spec=spec)
    assert (report.status, report.dim, report.architecture) == ("verified-config", 512, "resnet18.a1_in1k")


def test_random_and_offline_hub(tmp_path, monkeypatch):
    report, loaded = check_weights("resnet50_trunc", "random", input_size=64)
    assert (report.file, report.sha256, report.status, report.dim) == ("-", "-", "random", 1024)
    assert loaded.weights_source.startswith("random")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match=r"(?s)no weights for encoder 'resnet50_trunc'.*HF_HOME.*weights: random"):
        check_weights("resnet50_trunc", "hub", input_size=64)
    with pytest.raises(WeightsError, match=r"(?s)'conch_v15' has no public hub weights.*MahmoodLab/conchv1_5"):
        check_weights("conch_v15", "hub")


def test_hub_cache_file_is_verified_against_the_manifest(tmp_path, monkeypatch):
    """timm's weights found offline in the Hugging Face cache are hashed like a local file."""
    snapshot = tmp_path / "models--timm--resnet50.tv_in1k" / "snapshots" / ("a" * 40)
    cached = save_state(encoder_spec("resnet50_trunc"), snapshot / "model.safetensors")
    (tmp_path / "models--timm--resnet50.tv_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--resnet50.tv_in1k" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match=rf"weights file {cached} has sha256 \w{{64}}, but the manifest"):
        check_weights("resnet50_trunc", "hub", input_size=64)  # not the published file
    report, loaded = check_weights("resnet50_trunc", "hub", input_size=64, sha256=sha256(cached))
    assert (report.file, report.status, loaded.weights_source) == (
        str(cached),
        "verified-config",
        "hub:resnet50.tv_in1k",
    )


def test_report_round_trips_as_one_tsv_row(tmp_path, uni_file):
    report, _ = check_weights("uni_v1", str(uni_file), sha256=sha256(uni_file), spec=tiny("uni_v1", 32))
    write_report(report, tmp_path / "results" / "weights" / "uni_v1.tsv")
    lines = (tmp_path / "results" / "weights" / "uni_v1.tsv").read_text().splitlines()
    assert lines[0].split("\t") == list(REPORT_COLUMNS) and len(lines) == 2
    assert read_report(tmp_path / "results" / "weights" / "uni_v1.tsv") == report


def test_config_schema_takes_a_sha256_pin():
    schema = yaml.safe_load((ROOT / "config" / "schemas" / "config.schema.yaml").read_text())
    features = schema["properties"]["features"]
    jsonschema.validate({"encoder": "uni_v1", "weights": "/models", "sha256": "ab" * 32}, features)
    jsonschema.validate({"sha256": None}, features)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sha256": "not-a-hash"}, features)


@pytest.mark.integration
def test_check_weights_rule_writes_the_report(tmp_path):
    config = {
        "cohorts": {
            "tiny_genomics": {"modalities": ["genomics"], "demo": {"kind": "tcga", "seed": 7, "n_patients": 6}}
        },
        "features": {"weights": "random", "input_size": 64},
        "training": {"models": ["coxph"], "folds": 2, "n_bins": 2, "bins": "cohort"},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
    ]
    target = "results/weights/resnet50_trunc.tsv"
    done = subprocess.run([*snakemake, "--cores", "1", target], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = read_report(tmp_path / target)
    assert (report.encoder, report.status, report.dim) == ("resnet50_trunc", "random", 1024)

    # a whole pickled model as the weights: the job stops naming the file and the way to a state dict
    pickled_model(tmp_path / "model.pth")
    config["features"] |= {"weights": "model.pth", "sha256": file_sha256(tmp_path / "model.pth")}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([*snakemake, "--cores", "1", target], cwd=tmp_path, capture_output=True, text=True)
    log = (tmp_path / "logs" / "check_weights" / "resnet50_trunc.log").read_text()
    assert done.returncode != 0 and "model.pth is a pickled Python object" in log
    assert "save its state dict as safetensors" in log and "Re-running `torch.load`" not in log


RECOPY = "re-copy it and compare checksums (sha256sum) with the source"


def pickled_model(path):
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)


def cut_safetensors(path):
    save_file({"w": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-100])


def cut_zip(path):
    torch.save({"w": torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    ("name", "write", "what"),
    [
        ("model.safetensors", lambda p: p.write_bytes(b""), f"an empty file (0 bytes); {RECOPY}"),
        (
            "model.safetensors",
            lambda p: p.write_text("<!DOCTYPE html>\n<html><title>Access to model MahmoodLab/UNI is restricted"),
            "an HTML page, not a weights file: a failed download saved a web (error or login) page instead; "
            "download it again",
        ),
        (
            "pytorch_model.bin",
            lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:56e8\nsize 1213\n"),
            "a git-lfs pointer file, not the weights file itself; run `git lfs pull` in the repository it comes "
            "from, or download the file itself",
        ),
        (
            "model.safetensors",
            cut_safetensors,
            "a truncated or damaged safetensors file (safetensors: Error while deserializing header: incomplete "
            f"metadata, file not fully covered); {RECOPY}",
        ),
        (
            "pytorch_model.bin",
            cut_zip,
            f"a truncated zip (torch.save) file: it ends before its central directory; {RECOPY}",
        ),
    ],
)
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path, name, write, what):
    spec = tiny("uni_v1", 32)
    path = tmp_path / name
    write(path)
    with pytest.raises(WeightsError) as refused:
        check_weights("uni_v1", str(path), spec=spec)
    assert str(refused.value) == f"encoder 'uni_v1': weights file {path} is {what}. {spec.where_from()}"
    with pytest.raises(WeightsError) as unread:
        read_checkpoint(path)
    assert str(unread.value) == f"weights file {path} is {what}"


def pickled_message(path, needs=""):
    """The refusal of a pickled object, with the conversion command for this very file."""
    out = path.with_suffix(".safetensors")
    return (
        f"weights file {path} is a pickled Python object{needs}, not a state dict of tensors; weights are loaded only "
        "as tensors, never unpickled. If you trust the file (unpickling runs its code), save its state dict as "
        'safetensors and give that file as features: weights:, e.g. for a whole saved model: python -c "import '
        f"torch, safetensors.torch as st; m = torch.load('{path}', weights_only=False); st.save_file({{k: "
        f"v.contiguous() for k, v in m.state_dict().items()}}, '{out}')\""
    )


def test_a_pickled_model_is_refused_with_the_way_to_a_state_dict_and_without_torchs_advice(tmp_path):
    path = tmp_path / "uni.pth"
    pickled_model(path)
    expected = pickled_message(
        path, " (it needs the classes torch.nn.modules.container.Sequential, torch.nn.modules.linear.Linear)"
    )
    with pytest.raises(WeightsError) as refused:
        read_checkpoint(path)
    assert str(refused.value) == expected
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # torch's advice stays out
    spec = tiny("uni_v1", 32)
    with pytest.raises(WeightsError) as checked:
        check_weights("uni_v1", str(path), spec=spec)
    assert str(checked.value) == f"encoder 'uni_v1': {expected}. {spec.where_from()}"
    legacy = tmp_path / "legacy.pth"  # the pre-zip format: torch's refusal is recognised, its classes not listed
    torch.save(torch.nn.Linear(2, 2), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError) as old:
        read_checkpoint(legacy)
    assert str(old.value) == pickled_message(legacy)
