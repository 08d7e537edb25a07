"""The demo generator: outcomes from a known hazard, real slides, MCAT genomics, MRI with signal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import openslide
import pandas as pd
import pytest
import yaml
from lifelines import CoxPHFitter
from scipy.stats import spearmanr

from tests.conftest import ROOT
from workflow.demo import genomics, mri, tissue
from workflow.demo.design import MPP_BY_MAGNIFICATION, DemoSpec, item_rng, slides_table, truth_table
from workflow.demo.make import make_mri, make_slide, write_cohorts
from workflow.demo.sheets import DemoCohort
from workflow.genomics import METADATA

DEFAULT_COHORTS = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["cohorts"]
DEFAULT_SPECS = [DemoSpec(**c["demo"]) for c in DEFAULT_COHORTS.values() if "demo" in c]


def test_default_config_has_both_demo_settings():
    assert {s.kind for s in DEFAULT_SPECS} == {"tcga", "liver"}
    assert all(30 <= s.n_patients <= 40 for s in DEFAULT_SPECS)


@pytest.mark.parametrize("spec", DEFAULT_SPECS, ids=lambda s: s.kind)
def test_outcomes_follow_the_latent_risk(spec):
    truth = truth_table(spec)
    assert 0.3 <= truth["censorship"].mean() <= 0.5
    assert (truth["survival_months"] > 0).all()
    fit = CoxPHFitter().fit(
        truth[["survival_months", "risk"]].assign(event=1 - truth["censorship"]), "survival_months", "event"
    )
    assert fit.concordance_index_ >= 0.75
    assert fit.params_["risk"] > 0
    # Observed time is the earlier of event and censoring time, and censoring says which.
    censored = truth["censorship"] == 1
    assert (truth.loc[censored, "censor_time"] < truth.loc[censored, "event_time"]).all()
    assert (truth.loc[~censored, "event_time"] <= truth.loc[~censored, "censor_time"]).all()


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5])
def test_censoring_rate_is_what_was_asked(rate):
    truth = truth_table(DemoSpec(kind="tcga", seed=9, n_patients=40, censoring=rate))
    assert truth["censorship"].mean() == pytest.approx(rate, abs=1 / 40)


def test_design_is_deterministic_and_seed_dependent():
    a = truth_table(DemoSpec(kind="tcga", seed=1))
    pd.testing.assert_frame_equal(a, truth_table(DemoSpec(kind="tcga", seed=1)))
    assert not a["risk"].equals(truth_table(DemoSpec(kind="tcga", seed=2))["risk"])


def test_slide_table_mixes_magnifications_and_multi_slide_patients():
    spec = DEFAULT_SPECS[0]
    slides = slides_table(spec, truth_table(spec))
    assert set(slides["magnification"]) == {20, 40}
    assert slides["patient_id"].duplicated().any()
    assert slides["slide_id"].str.contains(r"\.").all()  # TCGA-like dotted IDs


@pytest.mark.parametrize("magnification", [20, 40])
def test_slide_opens_as_aperio_with_intended_metadata(tmp_path, magnification):
    spec = DemoSpec(kind="tcga", seed=4, n_patients=6, frac_40x=1.0 if magnification == 40 else 0.0)
    truth = truth_table(spec)
    slides = slides_table(spec, truth)
    slide_id = slides["slide_id"].iloc[0]
    make_slide(spec, truth, slides, slide_id, tmp_path / "s.svs")
    with openslide.OpenSlide(tmp_path / "s.svs") as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["openslide.mpp-x"]) == MPP_BY_MAGNIFICATION[magnification]
        assert float(slide.properties["openslide.objective-power"]) == magnification
        assert slide.level_count == 3
        assert [round(d) for d in slide.level_downsamples] == [1, 4, 16]
        width_um = slide.dimensions[0] * MPP_BY_MAGNIFICATION[magnification]
        assert width_um == pytest.approx(1500, rel=0.01)
        thumb = np.asarray(slide.read_region((0, 0), 2, slide.level_dimensions[2]).convert("RGB"))
    saturation = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1]
    assert 0.15 < (saturation > 20).mean() < 0.6  # tissue on a white background


def test_tissue_truth_geometry():
    layout = tissue.random_layout(item_rng(0, 3, 0))
    assert layout.holes and 0.3 < layout.tissue_area_mm2() < 0.8
    for mpp in (0.25, 0.5):
        mask = tissue.tissue_mask(layout, mpp)
        assert mask.sum() * mpp**2 / 1e6 == pytest.approx(layout.tissue_area_mm2(), rel=0.01)


def test_tissue_appearance_tracks_risk():
    """Nuclear (dark purple) pixel fraction inside tissue rises with the WSI view of the risk."""
    views = np.linspace(-2, 2, 7)
    fractions = []
    for k, view in enumerate(views):
        rng = item_rng(11, k)
        layout = tissue.random_layout(rng)
        image = tissue.render(layout, 1.0, view, rng)
        mask = tissue.tissue_mask(layout, 1.0)
        fractions.append((image[..., 1][mask] < 110).mean())
    assert spearmanr(views, fractions).statistic > 0.9


def test_genomics_table_is_mcat_format_with_signal():
    spec = DemoSpec(kind="tcga", seed=8, n_patients=40)
    truth = truth_table(spec)
    slides = slides_table(spec, truth)
    table = genomics.genomics_frame(spec, truth, slides)
    assert len(table) == len(slides) and list(table.columns[:9]) == list(METADATA)  # what the pathway reader expects
    kinds = {c.rsplit("_", 1)[1] for c in table.columns[9:]}
    assert kinds == set(genomics.KINDS)
    assert table["slide_id"].str.endswith(".svs").all()
    gene_cols = table.columns[9:]
    per_patient = table.groupby("case_id")[list(gene_cols)].nunique()
    assert (per_patient == 1).all().all()  # identical across a patient's slides
    cnv = table[[c for c in gene_cols if c.endswith("_cnv")]]
    assert set(np.unique(cnv.to_numpy())) <= {-2, -1, 0, 1, 2}
    first = table.drop_duplicates("case_id").set_index("case_id").loc[truth["patient_id"]]
    rnaseq = first[[c for c in gene_cols if c.endswith("_rnaseq")]]
    best = max(abs(spearmanr(truth["other_view"], rnaseq[c]).statistic) for c in rnaseq)
    assert best > 0.6
    sig = genomics.signatures_frame()
    assert list(sig.columns) == list(genomics.DEMO_SIGNATURES)
    assert not any(f"{g}_rnaseq" in table.columns for g in genomics.MISSING_GENES)


def test_mri_volumes_and_mask(tmp_path):
    spec = DemoSpec(kind="liver", seed=2, n_patients=4)
    truth = truth_table(spec)
    make_mri(spec, truth, "DL-0002", tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [f"{s}.nii.gz" for s in ("arterial", "delay", "hepatobiliary", "t1w", "t2w")] + ["tumour_mask.nii.gz"]
    )
    mask = nib.load(tmp_path / "tumour_mask.nii.gz")
    assert mask.shape == mri.SHAPE and np.allclose(mask.header.get_zooms(), mri.SPACING_MM)
    m = np.asarray(mask.dataobj) > 0
    assert m.sum() > 50
    arterial = nib.load(tmp_path / "arterial.nii.gz")
    assert np.allclose(arterial.affine, mask.affine)


def test_mri_tumour_grows_with_risk():
    sizes = [render_mask_voxels(view) for view in (-2.0, 0.0, 2.0)]
    assert sizes[0] < sizes[1] < sizes[2]


def render_mask_voxels(view: float) -> int:
    return int(mri.render_patient(view, item_rng(0, 1))[1].sum())


def test_cohorts_land_where_their_sheets_point_and_parallel_rendering_changes_nothing(tmp_path, monkeypatch):
    specs = {
        "t": DemoSpec(kind="tcga", seed=3, n_patients=2, frac_two_slides=0.5, frac_40x=0.0),
        "l": DemoSpec(kind="liver", seed=3, n_patients=2, frac_40x=0.0),
    }
    written = []
    for workers in (1, 2):
        (tmp_path / str(workers)).mkdir()
        monkeypatch.chdir(tmp_path / str(workers))
        write_cohorts(specs, workers=workers)
        files = sorted(p for p in Path(".").rglob("*") if p.is_file())
        written.append({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    assert written[0] == written[1]
    demos = [DemoCohort(name, spec) for name, spec in specs.items()]
    assert set(written[0]) == {f for demo in demos for f in demo.files}  # the demo_cohort rule's outputs
    for demo in demos:
        kinds = ["patients", "slides", *(["mri"] if demo.spec.kind == "liver" else [])]
        assert list(demo.sheets) == [f"resources/demo/{demo.name}/sheets/{kind}.tsv" for kind in kinds]
        for path, sheet in demo.sheets.items():  # the sheets the Snakefile knows at parse time
            pd.testing.assert_frame_equal(pd.read_csv(path, sep="\t", dtype=str), sheet.astype(str))


def test_a_demo_makes_only_its_cohorts_modalities(tmp_path, monkeypatch):
    """A [genomics] demo writes no slide, and the same table as the [wsi, genomics] demo of its seed."""
    monkeypatch.chdir(tmp_path)
    both = DemoSpec(kind="tcga", seed=3, n_patients=4, frac_two_slides=0.5, frac_40x=0.0)
    write_cohorts({"both": both, "alone": DemoSpec(**{**vars(both), "modalities": ("genomics",)})})
    root = Path("resources/demo/alone")
    alone = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert alone == ["genomics.csv", "sheets/patients.tsv", "signatures.csv", "truth.tsv"]
    for name in alone:
        assert Path("resources/demo/alone", name).read_bytes() == Path("resources/demo/both", name).read_bytes()
    with pytest.raises(ValueError, match=r"a demo of kind 'liver' has modalities \['wsi', 'mri'\]"):
        DemoSpec(kind="liver", seed=1, modalities=("genomics",))
