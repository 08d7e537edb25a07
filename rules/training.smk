# Survival models: splits per cohort, one training job per (cohort, model, fold), evaluation
# per (cohort, model) and one summary table over all cohorts.


rule make_splits:
    input:
        get_split_files,
    output:
        expand(SPLIT, fold=FOLDS, allow_missing=True),
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
        seed=TRAINING.seed,
        n_bins=TRAINING.n_bins,
    script:
        "../scripts/make_splits.py"


rule train_fold:
    input:
        # wsi (features files), genomics, mri: only the modalities the model reads
        unpack(get_training_inputs),
        split=SPLIT,
    output:
        # one per key of model.fold_outputs.FILES: weights, predictions, ..., meta
        **FOLD_OUTPUTS,
    log:
        "logs/train_fold/{cohort}/{model}/fold_{fold}.log",
    benchmark:
        "benchmarks/train_fold/{cohort}/{model}/fold_{fold}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TRAINING.threads
    resources:
        mem_mb=get_training_memory,
        gpu=1,
    params:
        outcomes=get_outcomes,
        slides=get_patient_slides,
        training=asdict(TRAINING),
        code=TRAINING_CODE,
    script:
        "../scripts/train_fold.py"


rule evaluate_model:
    input:
        unpack(get_fold_outputs),
    output:
        cindex=EVALUATION["cindex"],
        oof=EVALUATION["oof"],
        metrics=EVALUATION["metrics"],
        km_stats=EVALUATION["km_stats"],
        km_png=report(
            EVALUATION["km_png"],
            caption="../report/km.rst",
            category="Kaplan-Meier",
            labels={
                "cohort": "{cohort}",
                "model": "{model}",
                "split": "training median",
            },
        ),
        km_pdf=EVALUATION["km_pdf"],
        km_paper_png=report(
            EVALUATION["km_paper_png"],
            caption="../report/km_paper.rst",
            category="Kaplan-Meier",
            labels={"cohort": "{cohort}", "model": "{model}", "split": "paper"},
        ),
        km_paper_pdf=EVALUATION["km_paper_pdf"],
        curves_png=report(
            EVALUATION["curves_png"],
            caption="../report/cindex_curves.rst",
            category="Training curves",
            labels={"cohort": "{cohort}", "model": "{model}"},
        ),
        curves_pdf=EVALUATION["curves_pdf"],
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
        COMPARISON,
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
            SUMMARY_TABLE["tsv"],
            caption="../report/table.rst",
            category="C-index",
        ),
        md=SUMMARY_TABLE["md"],
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
