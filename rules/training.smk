# Survival models: splits per cohort, one training job per (cohort, variant, fold), evaluation
# per (cohort, variant) and one summary table over all cohorts. A variant is a named run of a
# registry model (each model is a variant of itself; experiment variants change options).


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


rule make_seeded_splits:
    output:
        expand(SEEDED_SPLIT, fold=FOLDS, allow_missing=True),
    log:
        "logs/make_splits/{cohort}_seed_{seed}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        outcomes=get_outcomes,
        splits_dir=None,
        seed=lambda wildcards: int(wildcards.seed),
        n_bins=TRAINING.n_bins,
    script:
        "../scripts/make_splits.py"


rule train_fold:
    input:
        # wsi (features files), genomics, mri: only the modalities the model reads
        unpack(get_training_inputs),
        split=get_split,
    output:
        # one per key of model.fold_outputs.FILES: weights, predictions, ..., meta
        **FOLD_OUTPUTS,
    log:
        "logs/train_fold/{cohort}/{variant}/fold_{fold}.log",
    benchmark:
        "benchmarks/train_fold/{cohort}/{variant}/fold_{fold}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TRAINING.threads
    resources:
        mem_mb=get_training_memory,
        gpu=1,
    params:
        outcomes=get_outcomes,
        slides=get_patient_slides,
        training=get_training_settings(),
        variant=get_variant,
        code=TRAINING_CODE,
        fold=lambda wildcards: int(wildcards.fold),
        refit=False,
    script:
        "../scripts/train_fold.py"


rule train_refit:
    input:
        unpack(get_training_inputs),
    output:
        **REFIT_OUTPUTS,
    log:
        "logs/train_refit/{cohort}/{variant}.log",
    benchmark:
        "benchmarks/train_refit/{cohort}/{variant}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: TRAINING.threads
    resources:
        mem_mb=get_training_memory,
        gpu=1,
    params:
        outcomes=get_outcomes,
        slides=get_patient_slides,
        training=get_training_settings(),
        variant=get_variant,
        code=TRAINING_CODE,
        fold=TRAINING.folds,
        refit=True,
    script:
        "../scripts/train_fold.py"


rule evaluate_model:
    input:
        unpack(get_fold_outputs),
    output:
        **EVALUATION,
    log:
        "logs/evaluate_model/{cohort}/{variant}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        evaluation=lookup(dpath="evaluation", within=config),
        code=script_code("evaluate_model.py"),
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
        code=script_code("compare_models.py"),
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
        descriptions={name: spec.description for name, spec in MODELS.items()}
        | {name: v.label for name, v in EXPERIMENTS.items()},
        code=script_code("summary_table.py"),
    script:
        "../scripts/summary_table.py"
