# Genomic pathway tensors, one job per cohort with genomics.


rule build_pathways:
    input:
        table=get_genomics_table,
        signatures=get_signatures,
    output:
        h5=PATHWAYS,
        families=report(
            FAMILIES,
            caption="../report/families.rst",
            category="Genomics",
            labels={"cohort": "{cohort}"},
        ),
    log:
        "logs/build_pathways/{cohort}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        patients=get_patient_ids,
        patient_column=get_patient_column,
        pathways=lookup(dpath="pathways", within=config),
    script:
        "../scripts/build_pathways.py"
