# Config and sheet loading, validation, wildcard constraints, results paths and input functions (no rules here).
import re
import sys
from dataclasses import asdict
from pathlib import Path

import yaml
from snakemake.utils import validate

# Scripts and this file import the repository's own libraries (workflow/, model/).
sys.path.insert(0, workflow.basedir)

from model.config import training_config
from model.fold_outputs import FILES as FOLD_FILES
from model.registry import FIGURE_MODELS, MODELS, applies, cohort_models, uses
from model.variants import plain, select_variants
from model.package import read_manifest
from workflow.cohort import (
    CohortError,
    check_folds,
    has_outcomes,
    load_cohorts,
    load_new_patients,
)
from workflow.config_check import check_config
from workflow.features.batches import plan_batches
from workflow.sources import code_hash, import_closure

# One line per problem first; Snakemake's validate then fills in the schema's defaults.
check_config(
    config,
    Path(workflow.basedir, "config", "schemas", "config.schema.yaml"),
    workflow.overwrite_configfiles or ["config/config.yaml"],
)
validate(config, schema="../config/schemas/config.schema.yaml")
TRAINING = training_config(config["training"])
COHORTS = load_cohorts(config["cohorts"], TRAINING)
DEMO_COHORTS = [name for name, c in COHORTS.items() if c.demo is not None]
ENCODER = config["features"]["encoder"]
# The slides each feature-extraction job encodes, per cohort: lists of slide IDs, by job number.
FEATURE_BATCHES = {
    name: plan_batches(cohort.slide_ids, config["features"]["slides_per_job"])
    for name, cohort in COHORTS.items()
}
FOLDS = list(range(TRAINING.folds))
COHORT_MODELS = {
    name: cohort_models(
        name, cohort.modalities, config["cohorts"][name].get("models"), TRAINING.models
    )
    for name, cohort in COHORTS.items()
}
CATALOGUE = config["experiments"]["catalogue"] or Path(
    workflow.basedir, "config", "variants.yaml"
)
EXPERIMENTS = (
    select_variants(
        yaml.safe_load(Path(CATALOGUE).read_text()) or {},
        config["experiments"]["run"],
        TRAINING,
    )
    if config["experiments"]["run"]
    else {}
)
# Every trained run by name: each registry model as itself, and the experiment variants.
VARIANTS = {name: plain(name) for name in MODELS} | EXPERIMENTS


def _cohort_experiments(name, cohort):
    """The experiment variants a cohort runs: its own list, else every one whose model it trains."""
    own = config["cohorts"][name].get("experiments")
    unknown = sorted(set(own or []) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(
            f"cohorts.{name}.experiments names {unknown}, which experiments.run does not select"
        )
    wanted = EXPERIMENTS if own is None else {v: EXPERIMENTS[v] for v in own}
    if own is not None:
        unusable = [
            v
            for v, spec in wanted.items()
            if not applies(spec.model, cohort.modalities)
        ]
        if unusable:
            raise ValueError(
                f"cohort {name}: experiment variants {unusable} need modalities it lacks"
            )
    return [v for v, spec in wanted.items() if spec.model in COHORT_MODELS[name]]


# What each cohort trains: its models, then its experiment variants.
COHORT_VARIANTS = {
    name: COHORT_MODELS[name] + _cohort_experiments(name, cohort)
    for name, cohort in COHORTS.items()
}


def _check_variant_folds():
    """A variant with bins or a split seed of its own must fit each cohort that runs it, too."""
    for name, cohort in COHORTS.items():
        for run in COHORT_VARIANTS[name]:
            spec = VARIANTS[run]
            if not (
                {"n_bins", "bins"} & set(spec.training) or spec.split_seed is not None
            ):
                continue
            splits = config["cohorts"][name].get("splits")
            try:
                check_folds(
                    cohort,
                    spec.training_config(TRAINING),
                    None if spec.split_seed is not None else splits,
                )
            except CohortError as err:
                raise CohortError(f"experiment variant {run}: {err}") from None


_check_variant_folds()


# Training reruns when library code its script imports changes (a params value: Snakemake
# watches the script, not its imports).
def script_code(script):
    """Hash of a script's library imports: a params value, so a library change reruns its jobs."""
    return code_hash(
        import_closure(Path(workflow.basedir, "scripts", script), workflow.basedir)
    )


TRAINING_CODE = script_code("train_fold.py")

# Results paths, each written once: rules name them as outputs, input functions fill them in.
INVENTORY = "results/{cohort}/slides/inventory.tsv"
PATCHES = "results/{cohort}/patches/{slide}.h5"
TILING_SUMMARY = "results/{cohort}/patches/tiling_summary.tsv"
TILING_GRID = "results/{cohort}/patches/qc/{slide}.grid.jpg"
FEATURES = "results/{cohort}/features/{encoder}/{slide}.h5"
FEATURES_BATCH = "results/{cohort}/features/{encoder}/batches/{batch}.tsv"
FEATURES_STAGED = "results/{cohort}/features/{encoder}/staged/{slide}.h5"
FEATURES_SUMMARY = "results/{cohort}/features/{encoder}/features_summary.tsv"
CLAM_PT = "results/{cohort}/features/{encoder}/pt_files/{slide}.pt"
PATHWAYS = "results/{cohort}/genomics/pathways.h5"
FAMILIES = "results/{cohort}/genomics/families.tsv"
PATIENT_ROI = "results/{cohort}/mri/patients/{patient}.h5"
MRI_QC = "results/{cohort}/mri/qc/{patient}.png"
ROI = "results/{cohort}/mri/roi.h5"
SPLIT = "results/{cohort}/splits/splits_{fold}.csv"
SEEDED_SPLIT = "results/{cohort}/splits/seed_{seed}/splits_{fold}.csv"
# the train_fold rule's outputs, named as model.fold_outputs writes them
FOLD_OUTPUTS = {
    key: f"results/{{cohort}}/models/{{variant}}/fold_{{fold}}/{name}"
    for key, name in FOLD_FILES.items()
}
# the train_refit rule's outputs: a package's one model trained on every patient (package: mode: refit)
REFIT_OUTPUTS = {
    key: f"results/{{cohort}}/models/{{variant}}/refit/{name}"
    for key, name in FOLD_FILES.items()
}
# the evaluate_model rule's outputs
EVALUATION = {
    key: f"results/{{cohort}}/evaluation/{{variant}}/{name}"
    for key, name in (
        ("cindex", "cindex.tsv"),
        ("oof", "oof_predictions.tsv"),
        ("metrics", "metrics.tsv"),
        ("km_stats", "km.tsv"),
    )
}
# the plot_model rule's outputs: per run, each figure as PNG and PDF
MODEL_FIGURES = {
    f"{key}_{ext}": f"results/{{cohort}}/figures/{{variant}}/{key}.{ext}"
    for key in ("km", "km_paper", "cindex_curves", "training_curves", "risk_groups")
    for ext in ("png", "pdf")
}
RISK_GROUP_TEST = "results/{cohort}/figures/{variant}/risk_groups.tsv"
FIGURE_CATEGORIES = {
    "km": "Kaplan-Meier (Fig. 6)",
    "km_paper": "Kaplan-Meier (Fig. 6)",
    "risk_groups": "Risk groups (Fig. 7)",
    "cindex_curves": "Training curves",
    "training_curves": "Training curves",
}
# cohort figures: the paper's Fig. 4 and Fig. 8, the tiling contact sheet
COHORT_FIGURES = {
    f"{key}_{ext}": f"results/{{cohort}}/figures/{key}.{ext}"
    for key in ("decoupled_features", "attention", "tiling_contact_sheet")
    for ext in ("png", "pdf")
}
GATE_FIGURE = {
    ext: f"results/paper/figures/gate_weights.{ext}" for ext in ("png", "pdf")
}
PAPER_TABLES = ("main", "IV", "V", "VI", "VII", "VIII", "IX", "X")
PAPER_TABLE = "results/paper/tables/table_{table}.{ext}"
COMPARISON = "results/{cohort}/evaluation/comparison.tsv"
SUMMARY_TABLE = {
    "tsv": "results/evaluation/table.tsv",
    "md": "results/evaluation/table.md",
}


def get_demo_outputs(cohort):
    """Every file the demo_cohort rule makes for one demo cohort."""
    return list(COHORTS[cohort].demo.files)


def get_demo_files():
    """Every file of every demo cohort."""
    return [f for name in DEMO_COHORTS for f in get_demo_outputs(name)]


def _slides(wildcards):
    """The cohort's slides sheet: a cohort without wsi has none, so no slide stage runs for it."""
    slides = SHEETS[wildcards.cohort].slides
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


# Job parameters hold only the settings that change a job's result: Snakemake reruns a job whose
# parameters change, so that what to do with a bad slide or MRI (on_error), how many slides a job
# encodes or which models a cohort trains never recompute finished results.
def _new_patients_settings(wildcards, key):
    """The package's settings of ``key`` when the job processes the new patients, else None."""
    if wildcards is not None and NEW_SETTINGS and wildcards.cohort == PREDICT_NAME:
        return NEW_SETTINGS[key]
    return None


def get_tiling_settings(wildcards=None):
    """The tiling: settings that decide a slide's patches (on_error decides only what a failure does).

    New patients are tiled with their package's settings.
    """
    settings = _new_patients_settings(wildcards, "tiling") or config["tiling"]
    return {k: v for k, v in settings.items() if k != "on_error"}


def get_feature_settings(wildcards=None):
    """The features: settings that decide a slide's features (not batching, export or import)."""
    skip = {"slides_per_job", "write_clam_pt", "import_clam"}
    settings = _new_patients_settings(wildcards, "features") or config["features"]
    return {k: v for k, v in settings.items() if k not in skip}


def get_mri_roi_settings(wildcards=None):
    """The mri_roi: settings that decide a crop (on_error decides only what a failure does)."""
    settings = _new_patients_settings(wildcards, "mri_roi") or config["mri_roi"]
    return {k: v for k, v in settings.items() if k != "on_error"}


def get_training_settings():
    """The training config of a fold's job, without the list of models to train."""
    return {k: v for k, v in asdict(TRAINING).items() if k != "models"}


# Model packages and the new patients they score (predict:). A package this workflow builds
# (results/<cohort>/package/<run>) processes new patients with this config's settings; one copied
# from elsewhere, with the settings its manifest records.
PACKAGE = "results/{cohort}/package/{variant}"
PACKAGE_RUNS = config["package"]["runs"]
_unknown_runs = sorted(set(PACKAGE_RUNS) - set(VARIANTS))
if _unknown_runs:
    raise ValueError(
        f"package: runs: {_unknown_runs} are neither models nor selected experiment variants; "
        f"choose from {sorted(VARIANTS)}"
    )
PREDICT = config["predict"]
PREDICT_NAME = PREDICT["name"]


def own_package(folder):
    """(cohort, run) when ``folder`` is a package this workflow builds, else None."""
    found = re.fullmatch(r"results/([^/]+)/package/([^/]+)/?", str(folder))
    if found and found[1] in COHORTS and found[2] in COHORT_VARIANTS[found[1]]:
        return found[1], found[2]
    return None


def _package_settings(folder):
    """What processing new patients for a package takes: its modalities, tiling, features, MRI settings."""
    if own_package(folder):
        cohort, run = own_package(folder)
        return {
            "modalities": list(uses(VARIANTS[run].model, COHORTS[cohort].modalities)),
            "tiling": get_tiling_settings(),
            "features": get_feature_settings(),
            "mri_roi": get_mri_roi_settings(),
            "mri_sequences": list(COHORTS[cohort].sequences),
            "encoder": ENCODER,
        }
    manifest = read_manifest(folder)
    features = dict(manifest["features"] or {})
    # the weights file is this site's (check_weights verifies it); its sha256 must be the package's
    features |= {k: config["features"][k] for k in ("weights", "sha256")}
    return {
        "modalities": manifest["modalities"],
        "tiling": manifest["tiling"],
        "features": features,
        "mri_roi": manifest["mri_roi"],
        "mri_sequences": manifest["mri_sequences"],
        "encoder": (manifest.get("encoder") or {}).get("encoder"),
    }


def _new_patients():
    """The new patients of predict: as a cohort (outcomes optional), and the package's settings."""
    if not PREDICT["package"]:
        return None, None
    if PREDICT_NAME in COHORTS:
        raise ValueError(
            f"predict: name: {PREDICT_NAME!r} is a training cohort's name; choose another"
        )
    settings = _package_settings(PREDICT["package"])
    modalities = settings["modalities"]
    if "wsi" in modalities and settings["encoder"] != ENCODER:
        raise ValueError(
            f"predict: package {PREDICT['package']} was trained on {settings['encoder']} features; "
            f"set features: encoder: {settings['encoder']} (and its weights) to score new slides"
        )
    cfg = {"modalities": modalities}
    cfg |= {k: PREDICT[k] for k in ("patients", "slides", "genomics") if k in PREDICT}
    if "mri" in PREDICT:
        cfg["mri"] = PREDICT["mri"] | {"sequences": settings["mri_sequences"]}
    for modality, key in (("wsi", "slides"), ("genomics", "genomics"), ("mri", "mri")):
        if modality in modalities and key not in PREDICT:
            raise ValueError(
                f"predict: package {PREDICT['package']} reads {modality}; give predict: {key}:"
            )
    if "patients" not in PREDICT:
        raise ValueError(
            "predict: lacks patients: (the new patients' sheet: patient_id [, survival_months, censorship])"
        )
    try:
        return load_new_patients(PREDICT_NAME, cfg, settings["mri_sequences"]), settings
    except CohortError as err:
        raise CohortError(f"predict: {err}") from None


NEW_PATIENTS, NEW_SETTINGS = _new_patients()
# Every cohort whose data stages run: the training cohorts and the new patients.
SHEETS = COHORTS | ({PREDICT_NAME: NEW_PATIENTS} if NEW_PATIENTS else {})
if NEW_PATIENTS:
    FEATURE_BATCHES[PREDICT_NAME] = plan_batches(
        NEW_PATIENTS.slide_ids, config["features"]["slides_per_job"]
    )


def _alternatives(ids):
    """Regex matching exactly one of the given IDs (escaped: TCGA IDs contain '.')."""
    return "|".join(re.escape(i) for i in sorted(set(ids))) or "(?!)"


wildcard_constraints:
    cohort=_alternatives(SHEETS),
    slide=_alternatives(s for c in SHEETS.values() for s in c.slide_ids),
    patient=_alternatives(p for c in SHEETS.values() for p in c.patient_ids),
    encoder=re.escape(ENCODER),
    variant=_alternatives(VARIANTS),
    fold=r"\d+",
    batch=r"\d+",
    seed=r"\d+",


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
        PATCHES, cohort=wildcards.cohort, slide=SHEETS[wildcards.cohort].slide_ids
    )


def _features_files(cohort, slides):
    """The slides' features files for the configured encoder (the only one {encoder} matches)."""
    return expand(FEATURES, cohort=cohort, encoder=ENCODER, slide=slides)


def get_feature_files(wildcards):
    """Features files of all slides of a cohort for the configured encoder."""
    return _features_files(wildcards.cohort, SHEETS[wildcards.cohort].slide_ids)


def get_batch_slides(wildcards):
    """IDs of the slides one feature-extraction job encodes, in order."""
    return FEATURE_BATCHES[wildcards.cohort][int(wildcards.batch)]


def get_batch_slide_files(wildcards):
    """The slide files of one feature-extraction job, in its slide order."""
    return list(_slides(wildcards).loc[get_batch_slides(wildcards), "path"])


def get_batch_patch_files(wildcards):
    """The coordinates files of one feature-extraction job, in its slide order."""
    return expand(PATCHES, cohort=wildcards.cohort, slide=get_batch_slides(wildcards))


def get_batch_staged_files(wildcards):
    """Where one feature-extraction job writes each of its slides' features, in its slide order."""
    return expand(
        FEATURES_STAGED,
        cohort=wildcards.cohort,
        encoder=wildcards.encoder,
        slide=get_batch_slides(wildcards),
    )


def get_slide_batch(wildcards):
    """The record of the feature-extraction job that encodes this slide."""
    batch = next(
        i
        for i, slides in enumerate(FEATURE_BATCHES[wildcards.cohort])
        if wildcards.slide in slides
    )
    return FEATURES_BATCH.format(
        cohort=wildcards.cohort, encoder=wildcards.encoder, batch=batch
    )


def get_weights_preflight(wildcards):
    """The weights check, before any slide is read (ancient: a re-check alone never re-reads slides).

    None when features are imported from CLAM, since no encoder runs then.
    """
    if config["features"]["import_clam"]:
        return []
    return [ancient(WEIGHTS_CHECK.format(encoder=ENCODER))]


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
    return SHEETS[wildcards.cohort].patient_ids


def _mri_rows(wildcards):
    mri = SHEETS[wildcards.cohort].mri
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
    return list(SHEETS[wildcards.cohort].sequences)


def get_mri_patient_rois(wildcards):
    """Per-patient ROI files of a cohort, in patient order."""
    return expand(
        PATIENT_ROI,
        cohort=wildcards.cohort,
        patient=SHEETS[wildcards.cohort].patient_ids,
    )


def _model_modalities(wildcards):
    """The cohort modalities the job's model reads (model.registry.uses)."""
    return uses(VARIANTS[wildcards.variant].model, COHORTS[wildcards.cohort].modalities)


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


def get_variant(wildcards):
    """The run's variant as plain values (model.variants.Variant fields)."""
    return asdict(VARIANTS[wildcards.variant])


def get_split(wildcards):
    """The fold's split: the cohort's, or stratified folds from the variant's own split seed."""
    seed = VARIANTS[wildcards.variant].split_seed
    if seed is None:
        return SPLIT.format(cohort=wildcards.cohort, fold=wildcards.fold)
    return SEEDED_SPLIT.format(cohort=wildcards.cohort, seed=seed, fold=wildcards.fold)


def _fold_files(cohort, variant, keys):
    return {
        key: expand(FOLD_OUTPUTS[key], cohort=cohort, variant=variant, fold=FOLDS)
        for key in keys
    }


def get_fold_outputs(wildcards):
    """The fold outputs the evaluation reads, for every fold of one run on one cohort."""
    return _fold_files(
        wildcards.cohort,
        wildcards.variant,
        ("predictions", "best_epoch", "predictions_train", "meta", "log"),
    )


def get_plot_inputs(wildcards):
    """The fold predictions and logs and the pooled predictions that plot_model draws from."""
    files = _fold_files(
        wildcards.cohort,
        wildcards.variant,
        ("predictions", "predictions_train", "log"),
    )
    return files | {"oof": EVALUATION["oof"].format(**wildcards)}


def get_cohort_oof(wildcards):
    """The pooled honest out-of-fold predictions of every run trained on a cohort."""
    return expand(
        EVALUATION["oof"],
        cohort=wildcards.cohort,
        variant=COHORT_VARIANTS[wildcards.cohort],
    )


def get_training_memory(wildcards, input, attempt):
    """Bags are cached in memory as float32: twice the features on disk plus 3 GB of room.

    A retry (--retries, as the SLURM profile sets) after an out-of-memory kill asks for more.
    """
    return int((3000 + 2 * input.size_mb) * attempt)


def get_evaluations():
    """The per-run metric tables of every cohort."""
    return [
        EVALUATION["metrics"].format(cohort=name, variant=variant)
        for name in COHORTS
        for variant in COHORT_VARIANTS[name]
    ]


def get_comparisons():
    """The model comparison table of every cohort that trains a model."""
    return [COMPARISON.format(cohort=name) for name in COHORTS if COHORT_MODELS[name]]


FIGURES_MODEL = config["figures"]["model"]
_drawable = sorted(v for v, spec in VARIANTS.items() if spec.model in FIGURE_MODELS)
if FIGURES_MODEL not in _drawable:
    kind = (
        f"a run of {VARIANTS[FIGURES_MODEL].model}, which has no decoupled features or MoE gate"
        if FIGURES_MODEL in VARIANTS
        else "neither a model nor a selected variant"
    )
    raise ValueError(
        f"figures.model {FIGURES_MODEL!r} is {kind}; choose from {_drawable}"
    )


def _figure_cohorts():
    """Cohorts that train the run whose decoupled features, gate and attributions are drawn."""
    return [name for name in COHORTS if FIGURES_MODEL in COHORT_VARIANTS[name]]


def get_details(wildcards):
    """The figures model's details files (every fold) of one cohort."""
    return _fold_files(wildcards.cohort, FIGURES_MODEL, ("details",))["details"]


def get_attention_inputs(wildcards):
    """Fig. 8's inputs: the figures model's details and pooled predictions, coordinates and slides."""
    cohort = wildcards.cohort
    return {
        "details": get_details(wildcards),
        "oof": EVALUATION["oof"].format(cohort=cohort, variant=FIGURES_MODEL),
        "coords": get_patch_files(wildcards),
        "slides": get_slide_files(wildcards),
    }


def get_gate_predictions():
    """The figures model's held-out predictions (every fold) of every cohort that trains it."""
    return {
        name: _fold_files(name, FIGURES_MODEL, ("predictions",))["predictions"]
        for name in _figure_cohorts()
    }


def get_grid_pictures(wildcards):
    """The tiling grid pictures of every slide of a cohort."""
    return expand(
        TILING_GRID,
        cohort=wildcards.cohort,
        slide=COHORTS[wildcards.cohort].slide_ids,
    )


def _table_runs():
    """Each paper table's rows: (run, label) pairs, the full model first where it is the reference row."""
    base = {
        "IV": "DeReF",
        "V": "MSE",
        "VI": "Random",
        "VII": "4",
        "VIII": "RCA",
        "IX": "1",
    }
    rows = {"main": [(m, MODELS[m].description) for m in MODELS]}
    for table, label in base.items():
        variants = [
            (v.name, v.label) for v in EXPERIMENTS.values() if table in v.tables
        ]
        model = {VARIANTS[name].model for name, _ in variants} or {FIGURES_MODEL}
        rows[table] = [(m, label) for m in sorted(model)] + variants
    rows["X"] = [(FIGURES_MODEL, "")]
    return rows


TABLE_RUNS = _table_runs()


def get_table_inputs(wildcards):
    """The paper tables' inputs: every run's metrics, repeated tests and Table VIII's details."""
    mi_runs = {run for run, _ in TABLE_RUNS["VIII"]}
    files = {
        "metrics": get_evaluations(),
        "repeats": [],
        "details": [],
        "meta": [],
        "predictions": [],
    }
    for name in COHORTS:
        if FIGURES_MODEL in COHORT_VARIANTS[name]:
            files["repeats"] += _fold_files(name, FIGURES_MODEL, ("repeats",))[
                "repeats"
            ]
        for run in mi_runs & set(COHORT_VARIANTS[name]):
            fold_files = _fold_files(name, run, ("details", "meta", "predictions"))
            for key, paths in fold_files.items():
                files[key] += paths
    return files


def get_table_rows():
    """Each table's rows and the modality ticks of the main table's models, as plain values."""
    ticks = {
        m: sorted(
            {
                modality
                for name, cohort in COHORTS.items()
                if m in COHORT_MODELS[name]
                for modality in uses(m, cohort.modalities)
            }
        )
        for m in MODELS
    }
    return {"runs": TABLE_RUNS, "ticks": ticks, "cohorts": list(COHORTS)}


def get_paper_tables():
    """Every paper table, TSV and Markdown."""
    return expand(PAPER_TABLE, table=PAPER_TABLES, ext=("tsv", "md"))


def get_figures():
    """Every table and figure: per run, per cohort, the paper's figures and tables, the summary table."""
    files = list(SUMMARY_TABLE.values()) + get_paper_tables()
    for name, cohort in COHORTS.items():
        for variant in COHORT_VARIANTS[name]:
            files += [
                path.format(cohort=name, variant=variant)
                for path in (*MODEL_FIGURES.values(), RISK_GROUP_TEST)
            ]
        keys = []
        if "wsi" in cohort.modalities:
            keys.append("tiling_contact_sheet")
        if name in _figure_cohorts():
            keys.append("decoupled_features")
            if "wsi" in cohort.modalities:
                keys.append("attention")
        files += [
            COHORT_FIGURES[f"{key}_{ext}"].format(cohort=name)
            for key in keys
            for ext in ("png", "pdf")
        ]
    if _figure_cohorts():
        files += list(GATE_FIGURE.values())
    return files


def get_package_inputs(wildcards):
    """A package's members (the folds' files, or the refit's) and the inputs the run trained on."""
    keys = ("weights", "scaling", "meta", "predictions", "predictions_train")
    if config["package"]["mode"] == "refit":
        members = {key: [REFIT_OUTPUTS[key].format(**wildcards)] for key in keys}
    else:
        members = _fold_files(wildcards.cohort, wildcards.variant, keys)
    return members | get_training_inputs(wildcards)


def is_network(variant):
    """Whether a run is a torch network (not the Cox baseline)."""
    return MODELS[VARIANTS[variant].model].build is not None


def get_packages():
    """The packages of package: runs, for every cohort that trains them."""
    return [
        PACKAGE.format(cohort=name, variant=run)
        for name in COHORTS
        for run in COHORT_VARIANTS[name]
        if run in PACKAGE_RUNS
    ]


# The new patients' outputs (predict:), under results/<predict name>/prediction/.
PREDICTION = {
    key: f"results/{PREDICT_NAME}/prediction/{name}"
    for key, name in (
        ("predictions", "predictions.tsv"),
        ("bins", "time_bins.tsv"),
        ("details", "details.h5"),
    )
}
PREDICT_PATHWAYS = f"results/{PREDICT_NAME}/genomics/package_pathways.h5"
HEATMAP = {
    ext: f"results/{PREDICT_NAME}/prediction/heatmaps/{{slide}}.{ext}"
    for ext in ("png", "pdf")
}
VALIDATION = {
    "tsv": f"results/{PREDICT_NAME}/prediction/validation.tsv",
    "png": f"results/{PREDICT_NAME}/prediction/km.png",
    "pdf": f"results/{PREDICT_NAME}/prediction/km.pdf",
}


def get_package_folder():
    """The predict: package folder, as the package_model rule names it."""
    return str(PREDICT["package"]).rstrip("/")


def get_new_slides(wildcards=None):
    """patient -> slide IDs of the new patients, in slides sheet order; {} unless the package reads WSI."""
    if "wsi" not in NEW_SETTINGS["modalities"]:
        return {}
    mapping = {}
    for slide, patient in zip(
        NEW_PATIENTS.slides.index, NEW_PATIENTS.slides["patient_id"]
    ):
        mapping.setdefault(patient, []).append(slide)
    return mapping


def get_predict_inputs(wildcards):
    """The package and the new patients' inputs of the modalities it reads (features in get_new_slides order)."""
    used = NEW_SETTINGS["modalities"]
    slides = [s for ids in get_new_slides().values() for s in ids]
    return {
        "package": get_package_folder(),
        "wsi": _features_files(PREDICT_NAME, slides),
        "genomics": [PREDICT_PATHWAYS] if "genomics" in used else [],
        "mri": [ROI.format(cohort=PREDICT_NAME)] if "mri" in used else [],
    }


def get_new_outcomes(wildcards=None):
    """patient_id, and survival_months + censorship where the sheet gives them, as plain records."""
    columns = ["survival_months", "censorship"] if has_outcomes(NEW_PATIENTS) else []
    return [
        {"patient_id": p} | {c: row[c] for c in columns}
        for p, row in NEW_PATIENTS.patients.iterrows()
    ]


def _package_is_network():
    """Whether the predict: package is a network (which gives patch attention to draw)."""
    own = own_package(get_package_folder())
    if own:
        return is_network(own[1])
    return bool(read_manifest(get_package_folder())["network"])


def get_predict_outputs(required=False):
    """Everything predict: yields: predictions, heatmaps per slide (a network reading WSI), the validation."""
    if not NEW_PATIENTS:
        if required:
            raise ValueError(
                "the predict target needs predict: package: and the new patients' sheets in the config; "
                "see README 'Score new patients'"
            )
        return []
    files = list(PREDICTION.values())
    if "wsi" in NEW_SETTINGS["modalities"]:
        files += [
            TILING_SUMMARY.format(cohort=PREDICT_NAME),
            FEATURES_SUMMARY.format(cohort=PREDICT_NAME, encoder=ENCODER),
        ]
    if "mri" in NEW_SETTINGS["modalities"]:
        files += expand(MRI_QC, cohort=PREDICT_NAME, patient=NEW_PATIENTS.patient_ids)
    if "wsi" in NEW_SETTINGS["modalities"] and _package_is_network():
        files += expand(list(HEATMAP.values()), slide=NEW_PATIENTS.slide_ids)
    if has_outcomes(NEW_PATIENTS):
        files += list(VALIDATION.values())
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
    return targets + get_figures() + get_packages() + get_predict_outputs()
