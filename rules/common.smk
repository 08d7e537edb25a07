# Config and sheet loading, validation, wildcard constraints and input functions (no rules here).
import re
import sys

from snakemake.utils import validate

# Scripts and this file import the repository's own libraries (workflow/, model/).
sys.path.insert(0, workflow.basedir)

from workflow.cohort import load_cohorts
from workflow.demo.design import LIVER_SEQUENCES, demo_root

validate(config, schema="../config/schemas/config.schema.yaml")
COHORTS = load_cohorts(config)
DEMO_COHORTS = [name for name, c in COHORTS.items() if c.demo is not None]


def _alternatives(ids):
    """Regex matching exactly one of the given IDs (escaped: TCGA IDs contain '.')."""
    return "|".join(re.escape(i) for i in sorted(set(ids))) or "(?!)"


wildcard_constraints:
    cohort=_alternatives(COHORTS),
    slide=_alternatives(s for c in COHORTS.values() for s in c.slide_ids),
    patient=_alternatives(p for c in COHORTS.values() for p in c.patient_ids),


def get_demo_config(wildcards):
    """The demo: block of a demo cohort (as params, so a changed seed regenerates the cohort)."""
    return dict(config["cohorts"][wildcards.cohort]["demo"])


def get_demo_outputs(cohort):
    """Every file the demo rules make for one demo cohort."""
    c = COHORTS[cohort]
    root = demo_root(cohort)
    files = [f"{root}/truth.tsv", *c.slides["path"]]
    if "genomics" in c.modalities:
        files += [c.genomics["table"], c.genomics["signatures"]]
    if c.mri is not None:
        files += sorted(set(c.mri["image"]) | set(c.mri["mask"]))
    return files


def get_slide_files(wildcards):
    """Paths of all slides of a cohort."""
    return list(COHORTS[wildcards.cohort].slides["path"])


def get_slide_sheet(wildcards):
    """slide_id, path and optional mpp override of each slide of a cohort, as plain records."""
    slides = COHORTS[wildcards.cohort].slides
    columns = [c for c in ("slide_id", "path", "mpp") if c in slides.columns]
    records = slides[columns].to_dict("records")
    return [{k: (None if v != v else v) for k, v in r.items()} for r in records]


def get_slide_path(wildcards):
    """The slide file of one slide of a cohort."""
    return COHORTS[wildcards.cohort].slides.loc[wildcards.slide, "path"]


def get_slide_mpp(wildcards):
    """The slide's mpp override from slides.tsv, or None to use its metadata."""
    slides = COHORTS[wildcards.cohort].slides
    mpp = slides.loc[wildcards.slide, "mpp"] if "mpp" in slides.columns else None
    return None if mpp is None or mpp != mpp else float(mpp)


def get_patch_files(wildcards):
    """Coordinates files of all slides of a cohort."""
    return [
        f"results/{wildcards.cohort}/patches/{s}.h5"
        for s in COHORTS[wildcards.cohort].slide_ids
    ]


def get_final_output():
    """Default targets: what the implemented stages yield for every cohort."""
    targets = []
    for name in COHORTS:
        targets += [
            f"results/{name}/slides/inventory.tsv",
            f"results/{name}/patches/tiling_summary.tsv",
        ]
    for name in DEMO_COHORTS:
        targets += get_demo_outputs(name)
    return targets
