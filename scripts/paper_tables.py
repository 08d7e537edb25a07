"""The DeReF paper's tables from the saved predictions: the main comparison, ablations IV-VII, VIII-X.

input: metrics (every run's metrics.tsv), repeats (the figures model's predictions_repeats.tsv),
details, meta, predictions (every fold of Table VIII's runs); output: <table>_tsv, <table>_md for
each table of PAPER_TABLES in rules/common.smk; params: rows (runs and labels per table, the main
table's modality ticks, cohorts), weights (features.weights)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import pandas as pd

from model.bins import assign_bins
from model.dependence import normalised_mutual_information
from model.fold_outputs import read_bin_edges, read_details, read_predictions
from model.metrics import NotComputable
from model.paper_tables import (
    COLUMNS,
    Row,
    fold_table,
    markdown,
    mi_table,
    repeat_cindex,
    repeats_table,
    rounds_table,
)
from workflow.io import atomic_path, write_tsv
from workflow.logs import log_to_file

MI_NEIGHBOURS = 3

log = log_to_file(snakemake.log[0])
spec = snakemake.params.rows
runs, ticks, cohorts = spec["runs"], spec["ticks"], spec["cohorts"]
metrics = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.metrics], ignore_index=True)
trained = set(metrics["model"])
cohorts = [c for c in cohorts if c in set(metrics["cohort"])]


def cohort_of(path: str) -> str:
    """The cohort of a fold file: results/<cohort>/models/<run>/fold_<k>/<file> (FOLD_OUTPUTS)."""
    return Path(path).parts[-5]


def rows(table: str) -> list[Row]:
    return [Row(run, label, tuple(ticks.get(run, ())) if table == "main" else ()) for run, label in runs[table]]


common = "Harrell's C over the cross-validation folds, mean ± population std; command: `snakemake --cores N figures`."
if snakemake.params.weights == "random":
    common += (
        " WSI features come from a randomly initialised encoder (features.weights: random): "
        "the numbers exercise the pipeline and say nothing about the models."
    )
notes = {
    "main": "Rows: every model trained; ✓: the modalities it reads. Overall: the mean of the cohort means.",
    "IV": "Ablations removing one component of the full model (config/variants.yaml).",
    "V": "Distance of the decoupling loss; MSE is the full model's.",
    "VI": "A fixed segment length of the reorganisation instead of a random one; Random is the full model.",
    "VII": "Number of experts in the MoE; 4 is the full model.",
    "IX": "Cross-validation rounds: round 1 is the full model on the cohort's splits, the others stratified folds "
    "drawn with their own seeds; Average: mean ± std of the round means.",
}
titles = {
    "main": "Main comparison (Tables II/III)",
    "IV": "Table IV: component ablations",
    "V": "Table V: decoupling distance",
    "VI": "Table VI: segment length",
    "VII": "Table VII: number of experts",
    "VIII": "Table VIII: normalised mutual information of V_share / V_explore with the risk labels",
    "IX": "Table IX: repeated cross-validation rounds",
    "X": "Table X: repeated tests of one trained model",
}
# the ablation tables' columns: the cohorts that train their full model
base = runs["X"][0][0]
base_cohorts = [c for c in cohorts if ((metrics["model"] == base) & (metrics["cohort"] == c)).any()]
tables: dict[str, pd.DataFrame | str] = {}  # a table, or why it could not be built
tables["main"] = fold_table(metrics, [r for r in rows("main") if r.run in trained], cohorts, overall=True)
for table in ("IV", "V", "VI", "VII", "VIII", "IX"):
    chosen = [r for r in rows(table) if r.run in trained]
    if not base_cohorts or not chosen:
        tables[table] = f"{base} is trained on no cohort"
    elif table == "IX":
        tables[table] = rounds_table(metrics, chosen, base_cohorts)
    elif table != "VIII":
        tables[table] = fold_table(metrics, chosen, base_cohorts)
    if len(chosen) < 2:
        notes[table] = notes.get(table, "") + " No variant of this table was run: add its variants to experiments.run."

repeat_files = list(snakemake.input.repeats)
if repeat_files:
    repeats = pd.concat([read_predictions(p).assign(cohort=cohort_of(p)) for p in repeat_files], ignore_index=True)
    tables["X"] = repeats_table(repeat_cindex(repeats), base_cohorts)
else:
    tables["X"] = f"{base} is trained on no cohort"
notes["X"] = (
    f"The selected model of every fold tested again on the same held-out patients "
    f"({base}); 'average' is the deterministic mean over segment choices, 'random' one random "
    "reorganisation per call (the authors' code): identical repeats give zero spread."
)

mi_rows = []
for details_path, meta_path, predictions_path in zip(
    snakemake.input.details, snakemake.input.meta, snakemake.input.predictions, strict=True
):
    held = read_predictions(predictions_path).set_index("patient_id")
    details, _ = read_details(details_path, ["shared", "explore"])
    patients = [p for p in held.index if p in details]
    labels = assign_bins(held.loc[patients, "survival_months"].to_numpy(), read_bin_edges(meta_path))
    key = {"cohort": cohort_of(details_path), "model": str(held["model"].iloc[0]), "fold": int(held["fold"].iloc[0])}
    for feature in ("shared", "explore"):
        try:
            if not all(feature in details[p] for p in patients):
                raise NotComputable(f"the run has no V_{feature}")
            values = pd.DataFrame([details[p][feature] for p in patients]).to_numpy()
            nmi, reason = normalised_mutual_information(values, labels, k=MI_NEIGHBOURS), ""
        except NotComputable as error:
            nmi, reason = float("nan"), str(error)
        mi_rows.append(key | {"feature": feature, "nmi": nmi, "reason": reason})
if "VIII" not in tables:
    mi = pd.DataFrame(mi_rows, columns=["cohort", "model", "fold", "feature", "nmi", "reason"])
    tables["VIII"] = mi_table(mi, [r for r in rows("VIII") if r.run in trained], base_cohorts)
notes["VIII"] = (
    "Mutual information between each decoupled feature (all its dimensions, z-scored) and the patient's "
    "time-bin label (the fold's bins), by the k-nearest-neighbour estimator of Ross (2014) with k = "
    f"{MI_NEIGHBOURS}, divided by the labels' entropy; per fold on its held-out patients with that fold's model, "
    "mean over folds. Rows: the decoupler of V_share and V_explore." + notes.get("VIII", "")
)

for table, frame in tables.items():
    note = " ".join(n for n in (notes.get(table, ""), common if table != "VIII" else "") if n)
    if isinstance(frame, str):  # not computable: an empty table and the reason
        write_tsv(pd.DataFrame(columns=COLUMNS), snakemake.output[f"{table}_tsv"])
        text = f"### {titles[table]}\n\nNot computed: {frame}.\n"
        log.warning("table %s not computed: %s", table, frame)
    else:
        write_tsv(frame, snakemake.output[f"{table}_tsv"])
        text = markdown(frame, titles[table], note, ("wsi", "genomics", "mri") if table == "main" else ()) + "\n"
        log.info("table %s: %d rows", table, len(frame))
    with atomic_path(snakemake.output[f"{table}_md"]) as tmp:
        tmp.write_text(text)
