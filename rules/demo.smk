# The embedded demo cohorts, generated from their seeds (config: cohorts/<name>/demo).
from dataclasses import asdict

if DEMO_COHORTS:

    rule demo_cohort:
        output:
            get_demo_files(),
        log:
            "logs/demo_cohort.log",
        conda:
            "../envs/wsi.yaml"
        # processes rendering slides and MRI volumes (about a second each)
        threads: 4
        resources:
            mem_mb=4000,
        params:
            # each demo block with the cohort's modalities: what to generate
            demos={name: asdict(COHORTS[name].demo.spec) for name in DEMO_COHORTS},
        script:
            "../scripts/demo_cohort.py"


rule demo:
    input:
        get_demo_files(),
