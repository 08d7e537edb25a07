# Patch features with a frozen encoder, several slides per job (or imported from CLAM outputs).

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
            coords=get_batch_patch_files,
            slides=get_batch_slide_files,
            checked=WEIGHTS_CHECK,
        output:
            FEATURES_BATCH,
        log:
            "logs/extract_features/{cohort}/{encoder}/batch{batch}.log",
        benchmark:
            "benchmarks/extract_features/{cohort}/{encoder}/batch{batch}.tsv"
        conda:
            "../envs/torch.yaml"
        # CPU: encoder threads; GPU: DataLoader readers.
        threads: 4
        resources:
            mem_mb=8000,
            gpu=1,
        params:
            features=get_feature_settings,
            slides=get_batch_slides,
            staged=get_batch_staged_files,
        script:
            "../scripts/extract_features.py"

    # The job above writes each slide under staged/; this gives it its final name (a hard link,
    # touched so that it is newer than the job's record). A failed or rerun job deletes only the
    # link, so the staged file stays for the job's next run to reuse.
    rule place_features:
        input:
            get_slide_batch,
        output:
            FEATURES,
        log:
            "logs/place_features/{cohort}/{encoder}/{slide}.log",
        localrule: True
        conda:
            "../envs/wsi.yaml"
        threads: 1
        resources:
            mem_mb=100,
        params:
            staged=lambda wildcards: FEATURES_STAGED.format(**wildcards),
        shell:
            "(ln -f {params.staged:q} {output:q} && touch {output:q}) 2> {log:q}"


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
