"""Fig. 5: the MoE gate's mean weight per expert and cohort over held-out patients, with the spread.

input: predictions (every fold of every cohort that trains the figures model); output: png, pdf;
params: cohorts (the cohort of each input file), run
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np

from model.figures.gates import gate_weights_figure
from model.fold_outputs import read_predictions
from workflow.logs import log_to_file

log = log_to_file(snakemake.log[0])
run = snakemake.params.run
gates: dict[str, list[np.ndarray]] = {}
for cohort, path in zip(snakemake.params.cohorts, snakemake.input.predictions, strict=True):
    table = read_predictions(path)
    columns = sorted((c for c in table.columns if c.startswith("gate_")), key=lambda c: int(c.split("_")[1]))
    if not columns:
        raise ValueError(f"{path}: no gate_<k> columns; {run} has no MoE gate (figures.model)")
    gates.setdefault(cohort, []).append(table[columns].to_numpy())
summary = gate_weights_figure(
    {cohort: np.concatenate(parts) for cohort, parts in gates.items()},
    f"{run}: mean MoE gate weight per expert (held-out patients)",
    [snakemake.output.png, snakemake.output.pdf],
)
log.info("gate weights:\n%s", summary.round(3).to_string(index=False))
