# The embedded demo cohorts, generated from a seed (config: cohorts/<name>/demo).


rule demo_cohort:
    output:
        truth="resources/demo/{cohort}/truth.tsv",
        slides="resources/demo/{cohort}/slides.tsv",
    log:
        "logs/demo_cohort/{cohort}.log",
    wildcard_constraints:
        cohort=_alternatives(DEMO_COHORTS),
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        demo=get_demo_config,
    script:
        "../scripts/demo_cohort.py"


rule demo_slide:
    input:
        truth=rules.demo_cohort.output.truth,
        slides=rules.demo_cohort.output.slides,
    output:
        "resources/demo/{cohort}/slides/{slide}.svs",
    log:
        "logs/demo_slide/{cohort}/{slide}.log",
    wildcard_constraints:
        cohort=_alternatives(DEMO_COHORTS),
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        demo=get_demo_config,
    script:
        "../scripts/demo_slide.py"


rule demo_genomics:
    input:
        truth=rules.demo_cohort.output.truth,
        slides=rules.demo_cohort.output.slides,
    output:
        table="resources/demo/{cohort}/genomics.csv",
        signatures="resources/demo/{cohort}/signatures.csv",
    log:
        "logs/demo_genomics/{cohort}.log",
    wildcard_constraints:
        cohort=_alternatives(DEMO_COHORTS),
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        demo=get_demo_config,
    script:
        "../scripts/demo_genomics.py"


rule demo_mri:
    input:
        truth=rules.demo_cohort.output.truth,
    output:
        expand(
            "resources/demo/{{cohort}}/mri/{{patient}}/{name}.nii.gz",
            name=[*LIVER_SEQUENCES, "tumour_mask"],
        ),
    log:
        "logs/demo_mri/{cohort}/{patient}.log",
    wildcard_constraints:
        cohort=_alternatives(DEMO_COHORTS),
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        demo=get_demo_config,
    script:
        "../scripts/demo_mri.py"


rule demo:
    input:
        [f for name in DEMO_COHORTS for f in get_demo_outputs(name)],
