# Tissue segmentation and patch coordinates at 20x, one job per slide, plus the cohort summary.


rule tile_slide:
    input:
        slide=get_slide_path,
    output:
        coords=PATCHES,
        contours="results/{cohort}/patches/contours/{slide}.geojson",
        mask="results/{cohort}/patches/qc/{slide}.mask.jpg",
        grid=TILING_GRID,
    log:
        "logs/tile_slide/{cohort}/{slide}.log",
    benchmark:
        "benchmarks/tile_slide/{cohort}/{slide}.tsv"
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        mpp=get_slide_mpp,
        tiling=get_tiling_settings,
        mpp_from_objective_power=lookup(
            dpath="wsi/mpp_from_objective_power", within=config
        ),
    script:
        "../scripts/tile_slide.py"


rule summarize_tiling:
    input:
        get_patch_files,
    output:
        report(
            TILING_SUMMARY,
            caption="../report/tiling_summary.rst",
            category="Tiling",
            labels={"cohort": "{cohort}"},
        ),
    log:
        "logs/summarize_tiling/{cohort}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../scripts/summarize_tiling.py"
