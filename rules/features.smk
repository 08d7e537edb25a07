# Patch features with a frozen encoder, one job per slide (or imported from CLAM outputs).

if lookup(dpath="features/import_clam", within=config):

    rule import_clam_features:
        input:
            coords=PATCHES,
            clam=get_clam_features_file,
        output:
            FEATURES,
        log:
            "logs/import_clam_features/{cohort}/{encoder}/{slide}.log",
        conda:
            "../envs/torch.yaml"
        threads: 1
        resources:
            mem_mb=4000,
        script:
            "../scripts/import_clam_features.py"

else:

    rule extract_features:
        input:
            coords=PATCHES,
            slide=get_slide_path,
            weights=get_weights_file,
        output:
            FEATURES,
        log:
            "logs/extract_features/{cohort}/{encoder}/{slide}.log",
        benchmark:
            "benchmarks/extract_features/{cohort}/{encoder}/{slide}.tsv"
        conda:
            "../envs/torch.yaml"
        # CPU: encoder threads; GPU: DataLoader readers. On a machine with few cores, run
        # --set-threads extract_features=1 so jobs overlap their start-up (make demo does).
        threads: 4
        resources:
            mem_mb=8000,
            gpu=1,
        params:
            features=lookup(dpath="features", within=config),
        script:
            "../scripts/extract_features.py"


rule export_clam_pt:
    input:
        FEATURES,
    output:
        CLAM_PT,
    log:
        "logs/export_clam_pt/{cohort}/{encoder}/{slide}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/export_clam_pt.py"


rule summarize_features:
    input:
        get_feature_files,
    output:
        report(
            FEATURES_SUMMARY,
            caption="../report/features_summary.rst",
            category="Features",
            labels={"cohort": "{cohort}", "encoder": "{encoder}"},
        ),
    log:
        "logs/summarize_features/{cohort}/{encoder}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../scripts/summarize_features.py"
