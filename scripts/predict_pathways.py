"""The new patients' gene families with exactly the columns their model package was trained on.

input: table, package; output: h5 (pathways.h5 format, workflow.genomics); params: patients,
patient_column, impute, bare_columns_are_mutations
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from model.package import family_columns, read_manifest
from workflow.genomics import package_pathways, sha256_file, write_pathways
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
manifest = read_manifest(snakemake.input.package)
matrices, families = package_pathways(
    snakemake.input.table,
    list(snakemake.params.patients),
    family_columns(manifest),
    patient_column=snakemake.params.patient_column,
    bare_as_mutations=snakemake.params.bare_columns_are_mutations,
    impute=snakemake.params.impute,
)
attrs = {
    "table": snakemake.input.table,
    "table_sha256": sha256_file(snakemake.input.table),
    "package": snakemake.input.package,
}
write_pathways(snakemake.output.h5, matrices, families, list(snakemake.params.patients), attrs)
for family in families:
    imputed = f"; {len(family.missing_genes)} missing, set to the training mean" if family.missing_genes else ""
    log.info("%s: %d columns%s", family.name, len(family.columns), imputed)
