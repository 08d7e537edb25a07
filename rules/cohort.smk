# Cohort-level checks that run before any heavy stage.


rule inventory_slides:
    input:
        slides=get_slide_files,
        weights_checked=get_weights_preflight,
    output:
        INVENTORY,
    log:
        "logs/inventory_slides/{cohort}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        slides=get_slide_sheet,
        mpp_from_objective_power=lookup(
            dpath="wsi/mpp_from_objective_power", within=config
        ),
    script:
        "../scripts/inventory_slides.py"
