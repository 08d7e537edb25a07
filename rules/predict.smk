# Model packages (one folder per cohort and run, everything scoring needs) and the new patients
# they score (predict:): tiled and encoded with the package's settings, scored, drawn, validated.


rule package_model:
    input:
        # members: the folds' (or the refit's) weights, scaling, fold.json and predictions; the
        # features files, pathways and ROIs the run trained on (encoder, gene columns, sequences)
        unpack(get_package_inputs),
    output:
        directory(PACKAGE),
    log:
        "logs/package_model/{cohort}/{variant}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        outcomes=get_outcomes,
        mode=lookup(dpath="package/mode", within=config),
        network=lambda wildcards: is_network(wildcards.variant),
        tiling=get_tiling_settings(),
        features=get_feature_settings(),
        mri_roi=get_mri_roi_settings(),
        training=get_training_settings(),
        code=TRAINING_CODE,
        package_code=script_code("package_model.py"),
    script:
        "../scripts/package_model.py"


rule package:
    input:
        get_packages(),


if NEW_PATIENTS:

    rule predict_pathways:
        input:
            table=lambda wildcards: PREDICT["genomics"]["table"],
            package=get_package_folder(),
        output:
            h5=PREDICT_PATHWAYS,
        log:
            f"logs/predict_pathways/{PREDICT_NAME}.log",
        conda:
            "../envs/stats.yaml"
        threads: 1
        resources:
            mem_mb=4000,
        params:
            patients=NEW_PATIENTS.patient_ids,
            patient_column=lookup(
                dpath="predict/genomics/patient_column",
                within=config,
                default="case_id",
            ),
            impute=lookup(dpath="predict/impute", within=config),
            bare_columns_are_mutations=lookup(
                dpath="pathways/bare_columns_are_mutations", within=config
            ),
        script:
            "../scripts/predict_pathways.py"

    rule predict_patients:
        input:
            unpack(get_predict_inputs),
        output:
            **PREDICTION,
        log:
            f"logs/predict_patients/{PREDICT_NAME}.log",
        benchmark:
            f"benchmarks/predict_patients/{PREDICT_NAME}.tsv"
        conda:
            "../envs/torch.yaml"
        threads: TRAINING.threads
        resources:
            mem_mb=get_training_memory,
            gpu=1,
        params:
            outcomes=get_new_outcomes,
            slides=get_new_slides,
            device=TRAINING.device,
            code=script_code("predict_patients.py"),
        script:
            "../scripts/predict_patients.py"

    rule predict_heatmap:
        input:
            details=PREDICTION["details"],
            predictions=PREDICTION["predictions"],
            coords=lambda wildcards: PATCHES.format(
                cohort=PREDICT_NAME, slide=wildcards.slide
            ),
            slide=lambda wildcards: NEW_PATIENTS.slides.loc[wildcards.slide, "path"],
            package=get_package_folder(),
        output:
            png=report(
                HEATMAP["png"],
                caption="../report/predict_heatmap.rst",
                category="New patients",
                labels={"slide": "{slide}"},
            ),
            pdf=HEATMAP["pdf"],
        log:
            f"logs/predict_heatmap/{PREDICT_NAME}/{{slide}}.log",
        conda:
            "../envs/wsi.yaml"
        threads: 1
        resources:
            mem_mb=2000,
        params:
            top_k=lookup(dpath="predict/top_k", within=config),
            name=PREDICT_NAME,
            code=script_code("predict_heatmap.py"),
        script:
            "../scripts/predict_heatmap.py"

    rule predict_validation:
        input:
            predictions=PREDICTION["predictions"],
            package=get_package_folder(),
        output:
            tsv=report(
                VALIDATION["tsv"],
                caption="../report/external_validation.rst",
                category="External validation",
            ),
            png=report(
                VALIDATION["png"],
                caption="../report/external_validation.rst",
                category="External validation",
            ),
            pdf=VALIDATION["pdf"],
        log:
            f"logs/predict_validation/{PREDICT_NAME}.log",
        conda:
            "../envs/stats.yaml"
        threads: 1
        resources:
            mem_mb=1000,
        params:
            name=PREDICT_NAME,
            code=script_code("predict_validation.py"),
        script:
            "../scripts/predict_validation.py"


rule predict:
    input:
        # a function: without predict: package:, asking for this target says what to set
        lambda wildcards: get_predict_outputs(required=True),
