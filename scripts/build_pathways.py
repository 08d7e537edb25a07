"""Build one cohort's genomic pathway tensors (six families) and the family report.

input: table, signatures; output: h5, families; params: patients, patient_column, pathways
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from workflow.genomics import build_pathways, family_report, sha256_file, write_pathways
from workflow.io import write_tsv
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
cfg = snakemake.params.pathways
patients = list(snakemake.params.patients)
matrices, families = build_pathways(
    snakemake.input.table,
    snakemake.input.signatures,
    patients,
    kinds=cfg["kinds"],
    patient_column=snakemake.params.patient_column,
    bare_as_mutations=cfg["bare_columns_are_mutations"],
    impute=cfg["impute"],
    min_gene_fraction=cfg["min_gene_fraction"],
)
attrs = {
    "table": snakemake.input.table,
    "table_sha256": sha256_file(snakemake.input.table),
    "signatures_sha256": sha256_file(snakemake.input.signatures),
    "kinds": list(cfg["kinds"]),
}
write_pathways(snakemake.output.h5, matrices, families, patients, attrs)
report = family_report(families)
write_tsv(report, snakemake.output.families)
for row in report.itertuples():
    log.info("%s: %d of %d genes, %d columns", row.family, row.matched_genes, row.signature_genes, row.columns)
