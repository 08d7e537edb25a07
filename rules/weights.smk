# Preflight of the patch encoder's weights, offline, before any slide is read: the configured
# file (or the manifest's file in a folder) must hash to its pin, load safely, fit the
# architecture of config/encoders.yaml strictly and give its output dim (workflow/features/weights.py).
from workflow.features.manifest import weights_input

WEIGHTS_CHECK = "results/weights/{encoder}.tsv"


rule check_weights:
    input:
        # the resolved file, so that replacing it re-checks; none for hub/random or a file not
        # there yet (the check then says where it must come from)
        lambda wildcards: weights_input(config["features"]),
    output:
        WEIGHTS_CHECK,
    log:
        "logs/check_weights/{encoder}.log",
    conda:
        "../envs/torch.yaml"
    # Hashing is I/O-bound; the checkpoint's tensors become the model's (built without storage),
    # so the largest (ViT-g, 1.1B parameters, 4.5 GB in fp32) needs about 6 GB.
    threads: 1
    resources:
        mem_mb=8000,
    params:
        features=get_feature_settings(),
    script:
        "../scripts/check_weights.py"
