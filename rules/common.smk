# Config and sheet loading, validation, wildcard constraints and input functions (no rules here).
import hashlib
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# Scripts and this file import the repository's own libraries (workflow/, model/).
sys.path.insert(0, workflow.basedir)

from model.registry import MODELS, applies, uses
from workflow.cohort import load_cohorts
from workflow.demo.design import demo_root

validate(config, schema="../config/schemas/config.schema.yaml")
COHORTS = load_cohorts(config)
DEMO_COHORTS = [name for name, c in COHORTS.items() if c.demo is not None]
ENCODER = config["features"]["encoder"]
FOLDS = list(range(config["training"]["folds"]))


def _cohort_models(name):
    """The models trained on a cohort: its own list, else the global one, kept where they apply."""
    wanted = config["cohorts"][name].get("models") or config["training"]["models"]
    modalities = set(COHORTS[name].modalities)
    unusable = [m for m in wanted if not applies(m, modalities)]
    if config["cohorts"][name].get("models") and unusable:
        raise ValueError(
            f"cohort {name}: models {unusable} need modalities it lacks ({sorted(modalities)}); "
            f"remove them from cohorts.{name}.models"
        )
    return [m for m in wanted if m not in unusable]


COHORT_MODELS = {name: _cohort_models(name) for name in COHORTS}
# Training reruns when the model code changes (a params value; Snakemake only watches scripts).
MODEL_CODE = hashlib.sha256(
    b"".join(
        p.read_bytes() for p in sorted(Path(workflow.basedir, "model").glob("*.py"))
    )
).hexdigest()[:16]


def _alternatives(ids):
    """Regex matching exactly one of the given IDs (escaped: TCGA IDs contain '.')."""
    return "|".join(re.escape(i) for i in sorted(set(ids))) or "(?!)"


wildcard_constraints:
    cohort=_alternatives(COHORTS),
    slide=_alternatives(s for c in COHORTS.values() for s in c.slide_ids),
    patient=_alternatives(p for c in COHORTS.values() for p in c.patient_ids),
    encoder=re.escape(ENCODER),
    model=_alternatives(MODELS),
    fold=r"\d+",


def get_demo_outputs(cohort):
    """Every file the demo_cohort rule makes for one demo cohort."""
    c = COHORTS[cohort]
    root = demo_root(cohort)
    files = [f"{root}/truth.tsv"]
    if "wsi" in c.modalities:
        files += [f"{root}/slides.tsv", *c.slides["path"]]
    if "genomics" in c.modalities:
        files += [c.genomics["table"], c.genomics["signatures"]]
    if c.mri is not None:
        files += sorted(set(c.mri["image"]) | set(c.mri["mask"]))
    return files


def get_demo_files():
    """Every file of every demo cohort."""
    return [f for name in DEMO_COHORTS for f in get_demo_outputs(name)]


def _slides(wildcards):
    """The cohort's slides sheet: a cohort without wsi has none, so no slide stage runs for it."""
    slides = COHORTS[wildcards.cohort].slides
    if slides is None:
        raise ValueError(
            f"cohort {wildcards.cohort} has no wsi modality: no slide stage runs for it"
        )
    return slides


def get_slide_files(wildcards):
    """Paths of all slides of a cohort."""
    return list(_slides(wildcards)["path"])


def get_slide_sheet(wildcards):
    """slide_id, path and optional mpp override of each slide of a cohort, as plain records."""
    slides = _slides(wildcards)
    columns = [c for c in ("slide_id", "path", "mpp") if c in slides.columns]
    records = slides[columns].to_dict("records")
    return [{k: (None if v != v else v) for k, v in r.items()} for r in records]


def get_slide_path(wildcards):
    """The slide file of one slide of a cohort."""
    return _slides(wildcards).loc[wildcards.slide, "path"]


def get_slide_mpp(wildcards):
    """The slide's mpp override from slides.tsv, or None to use its metadata."""
    slides = _slides(wildcards)
    mpp = slides.loc[wildcards.slide, "mpp"] if "mpp" in slides.columns else None
    return None if mpp is None or mpp != mpp else float(mpp)


def get_patch_files(wildcards):
    """Coordinates files of all slides of a cohort."""
    return [
        f"results/{wildcards.cohort}/patches/{s}.h5"
        for s in COHORTS[wildcards.cohort].slide_ids
    ]


def _features_file(cohort, slide):
    """A slide's features file for the configured encoder (the only one {encoder} matches)."""
    return f"results/{cohort}/features/{ENCODER}/{slide}.h5"


def get_feature_files(wildcards):
    """Features files of all slides of a cohort for the configured encoder."""
    return [
        _features_file(wildcards.cohort, s) for s in COHORTS[wildcards.cohort].slide_ids
    ]


def get_weights_file(wildcards):
    """The local weights file, as an input so that replacing it re-extracts (none for hub/random)."""
    weights = config["features"]["weights"]
    return [] if weights in ("hub", "random") else [weights]


def get_clam_features_file(wildcards):
    """The CLAM features file of a slide in the import folder (<slide>.h5, else <slide>.pt)."""
    folder = Path(config["features"]["import_clam"])
    h5 = folder / f"{wildcards.slide}.h5"
    return str(
        h5
        if h5.exists() or not (folder / f"{wildcards.slide}.pt").exists()
        else folder / f"{wildcards.slide}.pt"
    )


def get_genomics_table(wildcards):
    """The cohort's MCAT/TCGA genomics table."""
    return COHORTS[wildcards.cohort].genomics["table"]


def get_signatures(wildcards):
    """The cohort's signatures.csv."""
    return COHORTS[wildcards.cohort].genomics["signatures"]


def get_patient_column(wildcards):
    """Column of the genomics table holding patient IDs."""
    return COHORTS[wildcards.cohort].genomics.get("patient_column", "case_id")


def get_patient_ids(wildcards):
    """Patient IDs of a cohort, in sheet order (the row order of its tensors)."""
    return COHORTS[wildcards.cohort].patient_ids


def _mri_rows(wildcards):
    mri = COHORTS[wildcards.cohort].mri
    return mri[mri["patient_id"] == wildcards.patient]


def get_mri_images(wildcards):
    """Sequence name -> image path for one patient."""
    rows = _mri_rows(wildcards)
    return dict(zip(rows["sequence"], rows["image"]))


def get_mri_mask(wildcards):
    """The tumour mask of one patient."""
    return _mri_rows(wildcards)["mask"].iloc[0]


def get_mri_files(wildcards):
    """All MRI files of one patient (images and mask), as inputs."""
    return sorted(set(get_mri_images(wildcards).values()) | {get_mri_mask(wildcards)})


def get_mri_sequences(wildcards):
    """The cohort's sequences, in channel order."""
    return list(COHORTS[wildcards.cohort].sequences)


def get_mri_patient_rois(wildcards):
    """Per-patient ROI files of a cohort, in patient order."""
    return [
        f"results/{wildcards.cohort}/mri/patients/{p}.h5"
        for p in COHORTS[wildcards.cohort].patient_ids
    ]


def _model_modalities(wildcards):
    """The cohort modalities the job's model reads (model.registry.uses)."""
    return uses(wildcards.model, COHORTS[wildcards.cohort].modalities)


def get_training_inputs(wildcards):
    """A training job's inputs: those of the modalities its model reads, [] for the others.

    So a genomics-only model neither waits for slide features nor reruns when they change.
    Each is a list (of one file for genomics and mri) so that scripts read them alike.
    """
    used = _model_modalities(wildcards)
    root = f"results/{wildcards.cohort}"
    return {
        "wsi": get_feature_files(wildcards) if "wsi" in used else [],
        "genomics": [f"{root}/genomics/pathways.h5"] if "genomics" in used else [],
        "mri": [f"{root}/mri/roi.h5"] if "mri" in used else [],
    }


def get_outcomes(wildcards):
    """patient_id, survival_months and censorship of every patient, as plain records."""
    patients = COHORTS[wildcards.cohort].patients
    return [
        {
            "patient_id": p,
            "survival_months": float(row.survival_months),
            "censorship": int(row.censorship),
        }
        for p, row in patients.iterrows()
    ]


def get_patient_slides(wildcards):
    """patient -> [[slide_id, features file], ...] in slides.tsv order; {} unless the model reads WSI."""
    if "wsi" not in _model_modalities(wildcards):
        return {}
    slides = _slides(wildcards)
    mapping = {}
    for slide, patient in zip(slides.index, slides["patient_id"]):
        mapping.setdefault(patient, []).append(
            [slide, _features_file(wildcards.cohort, slide)]
        )
    return mapping


def get_splits_dir(wildcards):
    """The cohort's MCAT splits folder, or None for stratified folds."""
    return config["cohorts"][wildcards.cohort].get("splits")


def get_split_files(wildcards):
    """The MCAT split files a cohort names (as inputs, so editing them remakes the splits)."""
    folder = get_splits_dir(wildcards)
    return [f"{folder}/splits_{k}.csv" for k in FOLDS] if folder else []


def get_fold_predictions(wildcards):
    """Per-fold outputs of one model on one cohort, for the evaluation."""
    root = f"results/{wildcards.cohort}/models/{wildcards.model}"
    return {
        kind: [f"{root}/fold_{k}/{name}" for k in FOLDS]
        for kind, name in (
            ("honest", "predictions.tsv"),
            ("best_epoch", "predictions_best_epoch.tsv"),
            ("train", "predictions_train.tsv"),
            ("meta", "fold.json"),
            ("logs", "log.tsv"),
        )
    }


def get_cohort_oof(wildcards):
    """The pooled honest out-of-fold predictions of every model trained on a cohort."""
    return [
        f"results/{wildcards.cohort}/evaluation/{model}/oof_predictions.tsv"
        for model in COHORT_MODELS[wildcards.cohort]
    ]


def get_training_memory(wildcards, input):
    """Bags are cached in memory as float32: twice the features on disk plus 3 GB of room."""
    return int(3000 + 2 * input.size_mb)


def get_evaluations():
    """The per-model metric tables of every cohort."""
    return [
        f"results/{name}/evaluation/{model}/metrics.tsv"
        for name in COHORTS
        for model in COHORT_MODELS[name]
    ]


def get_comparisons():
    """The model comparison table of every cohort that trains a model."""
    return [
        f"results/{name}/evaluation/comparison.tsv"
        for name in COHORTS
        if COHORT_MODELS[name]
    ]


def get_figures():
    """Every result figure and table: KM curves (both splits), C-index curves, the summary table."""
    files = ["results/evaluation/table.tsv", "results/evaluation/table.md"]
    for name in COHORTS:
        for model in COHORT_MODELS[name]:
            root = f"results/{name}/evaluation/{model}"
            files += [
                f"{root}/{km}.{ext}"
                for km in ("km", "km_paper")
                for ext in ("png", "pdf")
            ]
            files += [f"{root}/cindex_curves.{ext}" for ext in ("png", "pdf")]
    return files


def get_final_output():
    """Default targets: what the implemented stages yield for every cohort."""
    targets = []
    for name in COHORTS:
        if "wsi" in COHORTS[name].modalities:
            targets += [
                f"results/{name}/slides/inventory.tsv",
                f"results/{name}/patches/tiling_summary.tsv",
                f"results/{name}/features/{ENCODER}/features_summary.tsv",
            ]
        if "genomics" in COHORTS[name].modalities:
            targets += [
                f"results/{name}/genomics/pathways.h5",
                f"results/{name}/genomics/families.tsv",
            ]
        if "mri" in COHORTS[name].modalities:
            targets.append(f"results/{name}/mri/roi.h5")
            targets += [
                f"results/{name}/mri/qc/{p}.png" for p in COHORTS[name].patient_ids
            ]
        if config["features"]["write_clam_pt"]:
            targets += [
                f"results/{name}/features/{ENCODER}/pt_files/{s}.pt"
                for s in COHORTS[name].slide_ids
            ]
    for name in DEMO_COHORTS:
        targets += get_demo_outputs(name)
    return targets + get_figures()
