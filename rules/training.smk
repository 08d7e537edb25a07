# Survival models: splits per cohort, one training job per (cohort, model, fold), evaluation
# per (cohort, model) and one summary table over all cohorts.


rule make_splits:
    input:
        get_split_files,
    output:
        expand("results/{{cohort}}/splits/splits_{fold}.csv", fold=FOLDS),
    log:
        "logs/make_splits/{cohort}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        outcomes=get_outcomes,
        splits_dir=get_splits_dir,
        training=lookup(dpath="training", within=config),
    script:
        "../scripts/make_splits.py"


rule train_fold:
    input:
        # wsi (features files), genomics, mri: only the modalities the model reads
        unpack(get_training_inputs),
        split="results/{cohort}/splits/splits_{fold}.csv",
    output:
        weights="results/{cohort}/models/{model}/fold_{fold}/weights.safetensors",
        predictions="results/{cohort}/models/{model}/fold_{fold}/predictions.tsv",
        predictions_train="results/{cohort}/models/{model}/fold_{fold}/predictions_train.tsv",
        best_epoch="results/{cohort}/models/{model}/fold_{fold}/predictions_best_epoch.tsv",
        details="results/{cohort}/models/{model}/fold_{fold}/details.h5",
        epochs="results/{cohort}/models/{model}/fold_{fold}/log.tsv",
        meta="results/{cohort}/models/{model}/fold_{fold}/fold.json",
    log:
        "logs/train_fold/{cohort}/{model}/fold_{fold}.log",
    benchmark:
        "benchmarks/train_fold/{cohort}/{model}/fold_{fold}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: lookup(dpath="training/threads", within=config)
    resources:
        mem_mb=get_training_memory,
        gpu=1,
    params:
        outcomes=get_outcomes,
        slides=get_patient_slides,
        training=lookup(dpath="training", within=config),
        model_code=MODEL_CODE,
    script:
        "../scripts/train_fold.py"


rule evaluate_model:
    input:
        unpack(get_fold_predictions),
    output:
        cindex="results/{cohort}/evaluation/{model}/cindex.tsv",
        oof="results/{cohort}/evaluation/{model}/oof_predictions.tsv",
        metrics="results/{cohort}/evaluation/{model}/metrics.tsv",
        km_stats="results/{cohort}/evaluation/{model}/km.tsv",
        km_png=report(
            "results/{cohort}/evaluation/{model}/km.png",
            caption="../workflow/report/km.rst",
            category="Kaplan-Meier",
            labels={
                "cohort": "{cohort}",
                "model": "{model}",
                "split": "training median",
            },
        ),
        km_pdf="results/{cohort}/evaluation/{model}/km.pdf",
        km_paper_png=report(
            "results/{cohort}/evaluation/{model}/km_paper.png",
            caption="../workflow/report/km_paper.rst",
            category="Kaplan-Meier",
            labels={"cohort": "{cohort}", "model": "{model}", "split": "paper"},
        ),
        km_paper_pdf="results/{cohort}/evaluation/{model}/km_paper.pdf",
        curves_png=report(
            "results/{cohort}/evaluation/{model}/cindex_curves.png",
            caption="../workflow/report/cindex_curves.rst",
            category="Training curves",
            labels={"cohort": "{cohort}", "model": "{model}"},
        ),
        curves_pdf="results/{cohort}/evaluation/{model}/cindex_curves.pdf",
    log:
        "logs/evaluate_model/{cohort}/{model}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        evaluation=lookup(dpath="evaluation", within=config),
    script:
        "../scripts/evaluate_model.py"


rule compare_models:
    input:
        get_cohort_oof,
    output:
        "results/{cohort}/evaluation/comparison.tsv",
    log:
        "logs/compare_models/{cohort}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        evaluation=lookup(dpath="evaluation", within=config),
    script:
        "../scripts/compare_models.py"


rule summary_table:
    input:
        metrics=get_evaluations(),
        comparisons=get_comparisons(),
    output:
        tsv=report(
            "results/evaluation/table.tsv",
            caption="../workflow/report/table.rst",
            category="C-index",
        ),
        md="results/evaluation/table.md",
    log:
        "logs/summary_table.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        descriptions={name: spec.description for name, spec in MODELS.items()},
    script:
        "../scripts/summary_table.py"


rule figures:
    input:
        get_figures(),
