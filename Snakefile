# Multimodal cancer survival workflow: whole-slide images + genomics or MRI + outcomes in,
# trained models, C-index tables, Kaplan-Meier curves and figures out.
# Run: snakemake --cores 8 --use-conda   (or from the pip venv: make demo)
from snakemake.utils import min_version

min_version("9.0")


# The default config, unless --configfile names others: Snakemake would merge those into it, so
# the demo cohorts would run besides a config's own cohorts.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/cohort.smk"
include: "rules/tiling.smk"
include: "rules/weights.smk"
include: "rules/features.smk"
include: "rules/genomics.smk"
include: "rules/mri.smk"
include: "rules/training.smk"
include: "rules/figures.smk"
include: "rules/predict.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
