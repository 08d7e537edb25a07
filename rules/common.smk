# Config and sheet loading, validation, wildcard constraints, results paths and input functions (no rules here).
import re
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.utils import validate

# Scripts and this file import the repository's own libraries (workflow/, model/).
sys.path.insert(0, workflow.basedir)

from model.config import training_config
from model.fold_outputs import FILES as FOLD_FILES
from model.registry import MODELS, cohort_models, uses
from workflow.cohort import load_cohorts
from workflow.sources import code_hash, import_closure

validate(config, schema="../config/schemas/config.schema.yaml")
TRAINING = training_config(config["training"])
COHORTS = load_cohorts(config["cohorts"], TRAINING)
DEMO_COHORTS = [name for name, c in COHORTS.items() if c.demo is not None]
ENCODER = config["features"]["encoder"]
FOLDS = list(range(TRAINING.folds))
COHORT_MODELS = {
    name: cohort_models(
        name, cohort.modalities, config["cohorts"][name].get("models"), TRAINING.models
    )
    for name, cohort in COHORTS.items()
}
# Training reruns when library code its script imports changes (a params value: Snakemake
# watches the script, not its imports).
TRAINING_CODE = code_hash(
    import_closure(Path(workflow.basedir, "scripts", "train_fold.py"), workflow.basedir)
)

# Results paths, each written once: rules name them as outputs, input functions fill them in.
INVENTORY = "results/{cohort}/slides/inventory.tsv"
PATCHES = "results/{cohort}/patches/{slide}.h5"
TILING_SUMMARY = "results/{cohort}/patches/tiling_summary.tsv"
FEATURES = "results/{cohort}/features/{encoder}/{slide}.h5"
FEATURES_SUMMARY = "results/{cohort}/features/{encoder}/features_summary.tsv"
CLAM_PT = "results/{cohort}/features/{encoder}/pt_files/{slide}.pt"
PATHWAYS = "results/{cohort}/genomics/pathways.h5"
FAMILIES = "results/{cohort}/genomics/families.tsv"
PATIENT_ROI = "results/{cohort}/mri/patients/{patient}.h5"
MRI_QC = "results/{cohort}/mri/qc/{patient}.png"
ROI = "results/{cohort}/mri/roi.h5"
SPLIT = "results/{cohort}/splits/splits_{fold}.csv"
# the train_fold rule's outputs, named as model.fold_outputs writes them
FOLD_OUTPUTS = {
    key: f"results/{{cohort}}/models/{{model}}/fold_{{fold}}/{name}"
    for key, name in FOLD_FILES.items()
}
# the evaluate_model rule's outputs
EVALUATION = {
    key: f"results/{{cohort}}/evaluation/{{model}}/{name}"
    for key, name in (
        ("cindex", "cindex.tsv"),
        ("oof", "oof_predictions.tsv"),
        ("metrics", "metrics.tsv"),
        ("km_stats", "km.tsv"),
        ("km_png", "km.png"),
        ("km_pdf", "km.pdf"),
        ("km_paper_png", "km_paper.png"),
        ("km_paper_pdf", "km_paper.pdf"),
        ("curves_png", "cindex_curves.png"),
        ("curves_pdf", "cindex_curves.pdf"),
    )
}
EVALUATION_FIGURES = (
    "km_png",
    "km_pdf",
    "km_paper_png",
    "km_paper_pdf",
    "curves_png",
    "curves_pdf",
)
COMPARISON = "results/{cohort}/evaluation/comparison.tsv"
SUMMARY_TABLE = {
    "tsv": "results/evaluation/table.tsv",
    "md": "results/evaluation/table.md",
}


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
    return list(COHORTS[cohort].demo.files)


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
    return expand(
        PATCHES, cohort=wildcards.cohort, slide=COHORTS[wildcards.cohort].slide_ids
    )


def _features_files(cohort, slides):
    """The slides' features files for the configured encoder (the only one {encoder} matches)."""
    return expand(FEATURES, cohort=cohort, encoder=ENCODER, slide=slides)


def get_feature_files(wildcards):
    """Features files of all slides of a cohort for the configured encoder."""
    return _features_files(wildcards.cohort, COHORTS[wildcards.cohort].slide_ids)


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
    return expand(
        PATIENT_ROI,
        cohort=wildcards.cohort,
        patient=COHORTS[wildcards.cohort].patient_ids,
    )


def _model_modalities(wildcards):
    """The cohort modalities the job's model reads (model.registry.uses)."""
    return uses(wildcards.model, COHORTS[wildcards.cohort].modalities)


def get_patient_slides(wildcards):
    """patient -> slide IDs in slides.tsv order; {} unless the model reads WSI."""
    if "wsi" not in _model_modalities(wildcards):
        return {}
    slides = _slides(wildcards)
    mapping = {}
    for slide, patient in zip(slides.index, slides["patient_id"]):
        mapping.setdefault(patient, []).append(slide)
    return mapping


def get_training_inputs(wildcards):
    """A training job's inputs: those of the modalities its model reads, [] for the others.

    So a genomics-only model neither waits for slide features nor reruns when they change.
    wsi: the features files of get_patient_slides' slides, in its order (patients, then slides);
    genomics and mri: a list of one file, so that scripts read them alike.
    """
    used = _model_modalities(wildcards)
    slides = [s for ids in get_patient_slides(wildcards).values() for s in ids]
    cohort = wildcards.cohort
    return {
        "wsi": _features_files(cohort, slides),
        "genomics": [PATHWAYS.format(cohort=cohort)] if "genomics" in used else [],
        "mri": [ROI.format(cohort=cohort)] if "mri" in used else [],
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


def get_splits_dir(wildcards):
    """The cohort's MCAT splits folder, or None for stratified folds."""
    return config["cohorts"][wildcards.cohort].get("splits")


def get_split_files(wildcards):
    """The MCAT split files a cohort names (as inputs, so editing them remakes the splits)."""
    folder = get_splits_dir(wildcards)
    return [f"{folder}/splits_{k}.csv" for k in FOLDS] if folder else []


def get_fold_outputs(wildcards):
    """The fold outputs the evaluation reads, for every fold of one model on one cohort."""
    return {
        key: expand(
            FOLD_OUTPUTS[key],
            cohort=wildcards.cohort,
            model=wildcards.model,
            fold=FOLDS,
        )
        for key in ("predictions", "best_epoch", "predictions_train", "meta", "log")
    }


def get_cohort_oof(wildcards):
    """The pooled honest out-of-fold predictions of every model trained on a cohort."""
    return expand(
        EVALUATION["oof"],
        cohort=wildcards.cohort,
        model=COHORT_MODELS[wildcards.cohort],
    )


def get_training_memory(wildcards, input):
    """Bags are cached in memory as float32: twice the features on disk plus 3 GB of room."""
    return int(3000 + 2 * input.size_mb)


def get_evaluations():
    """The per-model metric tables of every cohort."""
    return [
        EVALUATION["metrics"].format(cohort=name, model=model)
        for name in COHORTS
        for model in COHORT_MODELS[name]
    ]


def get_comparisons():
    """The model comparison table of every cohort that trains a model."""
    return [COMPARISON.format(cohort=name) for name in COHORTS if COHORT_MODELS[name]]


def get_figures():
    """Every result figure and table: KM curves (both splits), C-index curves, the summary table."""
    files = list(SUMMARY_TABLE.values())
    for name in COHORTS:
        for model in COHORT_MODELS[name]:
            files += [
                EVALUATION[key].format(cohort=name, model=model)
                for key in EVALUATION_FIGURES
            ]
    return files


def get_final_output():
    """Default targets: what the implemented stages yield for every cohort."""
    targets = []
    for name, cohort in COHORTS.items():
        if "wsi" in cohort.modalities:
            targets += [
                INVENTORY.format(cohort=name),
                TILING_SUMMARY.format(cohort=name),
                FEATURES_SUMMARY.format(cohort=name, encoder=ENCODER),
            ]
        if "genomics" in cohort.modalities:
            targets += [PATHWAYS.format(cohort=name), FAMILIES.format(cohort=name)]
        if "mri" in cohort.modalities:
            targets.append(ROI.format(cohort=name))
            targets += expand(MRI_QC, cohort=name, patient=cohort.patient_ids)
        if config["features"]["write_clam_pt"]:
            targets += expand(
                CLAM_PT, cohort=name, encoder=ENCODER, slide=cohort.slide_ids
            )
    for name in DEMO_COHORTS:
        targets += get_demo_outputs(name)
    return targets + get_figures()
