# MRI tumour ROI crops: one job per patient, gathered per cohort.


rule crop_mri:
    input:
        get_mri_files,
    output:
        h5=PATIENT_ROI,
        qc=MRI_QC,
    log:
        "logs/crop_mri/{cohort}/{patient}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        images=get_mri_images,
        mask=get_mri_mask,
        sequences=get_mri_sequences,
        roi=get_mri_roi_settings,
    script:
        "../scripts/crop_mri.py"


rule gather_mri:
    input:
        get_mri_patient_rois,
    output:
        ROI,
    log:
        "logs/gather_mri/{cohort}.log",
    conda:
        "../envs/wsi.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/gather_mri.py"
