# Every table and figure, drawn from the saved predictions, details and logs only: `snakemake
# figures` rebuilds them without retraining, and a change to plotting code reruns only these jobs
# (each rule's params carry the hash of its script's library imports).


rule plot_model:
    input:
        unpack(get_plot_inputs),
    output:
        **{
            key: (
                report(
                    path,
                    caption=f"../report/{key[:-4]}.rst",
                    category=FIGURE_CATEGORIES[key[:-4]],
                    subcategory="{cohort}",
                    labels={"run": "{variant}", "figure": key[:-4]},
                )
                if key.endswith("_png")
                else path
            )
            for key, path in MODEL_FIGURES.items()
        },
        risk_test=RISK_GROUP_TEST,
    log:
        "logs/plot_model/{cohort}/{variant}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        code=script_code("plot_model.py"),
    script:
        "../scripts/plot_model.py"


rule decoupled_features_figure:
    input:
        details=get_details,
    output:
        png=report(
            COHORT_FIGURES["decoupled_features_png"],
            caption="../report/decoupled_features.rst",
            category="Decoupled features (Fig. 4)",
            labels={"cohort": "{cohort}"},
        ),
        pdf=COHORT_FIGURES["decoupled_features_pdf"],
    log:
        "logs/decoupled_features_figure/{cohort}.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        run=FIGURES_MODEL,
        seed=lookup(dpath="figures/tsne_seed", within=config),
        code=script_code("decoupled_features_figure.py"),
    script:
        "../scripts/decoupled_features_figure.py"


rule gate_weights_figure:
    input:
        predictions=[f for files in get_gate_predictions().values() for f in files],
    output:
        png=report(
            GATE_FIGURE["png"],
            caption="../report/gate_weights.rst",
            category="MoE gate (Fig. 5)",
        ),
        pdf=GATE_FIGURE["pdf"],
    log:
        "logs/gate_weights_figure.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        cohorts=[
            cohort for cohort, files in get_gate_predictions().items() for _ in files
        ],
        run=FIGURES_MODEL,
        code=script_code("gate_weights_figure.py"),
    script:
        "../scripts/gate_weights_figure.py"


rule attention_figure:
    input:
        unpack(get_attention_inputs),
    output:
        png=report(
            COHORT_FIGURES["attention_png"],
            caption="../report/attention.rst",
            category="Attention (Fig. 8)",
            labels={"cohort": "{cohort}"},
        ),
        pdf=COHORT_FIGURES["attention_pdf"],
    log:
        "logs/attention_figure/{cohort}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        run=FIGURES_MODEL,
        slides=get_slide_sheet,
        patients=lambda wildcards: config["figures"]["attention_patients"].get(
            wildcards.cohort
        ),
        top_k=lookup(dpath="figures/top_k", within=config),
        code=script_code("attention_figure.py"),
    script:
        "../scripts/attention_figure.py"


rule tiling_contact_sheet:
    input:
        pictures=get_grid_pictures,
        summary=TILING_SUMMARY,
    output:
        png=report(
            COHORT_FIGURES["tiling_contact_sheet_png"],
            caption="../report/tiling_contact_sheet.rst",
            category="Tiling QC",
            labels={"cohort": "{cohort}"},
        ),
        pdf=COHORT_FIGURES["tiling_contact_sheet_pdf"],
    log:
        "logs/tiling_contact_sheet/{cohort}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        slides=lambda wildcards: COHORTS[wildcards.cohort].slide_ids,
        code=script_code("tiling_contact_sheet.py"),
    script:
        "../scripts/tiling_contact_sheet.py"


rule paper_tables:
    input:
        unpack(get_table_inputs),
    output:
        **{
            f"{table}_{ext}": (
                report(
                    PAPER_TABLE.format(table=table, ext=ext),
                    caption="../report/paper_tables.rst",
                    category="Paper tables",
                    labels={"table": table},
                )
                if ext == "tsv"
                else PAPER_TABLE.format(table=table, ext=ext)
            )
            for table in PAPER_TABLES
            for ext in ("tsv", "md")
        },
    log:
        "logs/paper_tables.log",
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        rows=get_table_rows(),
        weights=lookup(dpath="features/weights", within=config),
        code=script_code("paper_tables.py"),
    script:
        "../scripts/paper_tables.py"


rule figures:
    input:
        get_figures(),
