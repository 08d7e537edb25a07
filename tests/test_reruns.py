"""Reruns of the real Snakefile: a killed run resumes to the same bytes, the same seed gives the same
results, and a slide added to a finished cohort reruns only the jobs that read it.

Two runs of the tiny demo config (``tests.test_workflow.tiny_config``, all three cohorts, every
model and variant trained and evaluated) are shared by the module: ``reference``, uninterrupted,
and ``interrupted``, killed with SIGKILL during feature extraction and again during training, each
time followed by ``--unlock`` and a rerun. The interrupted run is compared with the reference for
the resume proofs and is also the second run of the determinism proof; the uninterrupted control
pair is in the slide-addition test, whose user cohort (the reference's tiny_tcga sheets) ends with
the reference's tiny_tcga data and must reproduce its predictions and weights byte for byte. Both
runs stop at the tables (plus one model's figures): the CLAM .pt export and the other figures would
double their cost.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.test_workflow import SNAKEMAKE, run, tiny_config

pytestmark = pytest.mark.integration

ENCODER = "resnet50_trunc"
CORES = ["--cores", "2"]
# every cohort's models, evaluations and comparison, the summary and paper tables, one model's
# figures (PNG and PDF) to see whether figures repeat byte for byte, and the features summaries
# (no rule above needs them; the kill during training waits for them)
TARGETS = [
    "summary_table",
    "paper_tables",
    "results/tiny_genomics/figures/snn/km.png",
    *(f"results/{cohort}/features/resnet50_trunc/features_summary.tsv" for cohort in ("tiny_tcga", "tiny_liver")),
]
# what a resumed or repeated run must reproduce byte for byte
COMPARED = (
    "results/*/models/*/fold_*/predictions*.tsv",
    "results/*/models/*/fold_*/weights.safetensors",
    "results/*/evaluation/**/*.tsv",
    "results/evaluation/table.tsv",
    "results/paper/tables/*.tsv",
)
FIGURES = ("results/*/figures/**/*.png", "results/*/figures/**/*.pdf")
KEPT = "slide {}: features already written by an earlier run from the same inputs, kept"
# wall seconds of each Snakemake run of the module; each test prints them (pytest -rP shows them)
TIMES: dict[str, float] = {}


def timed(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    done = run(args, cwd)
    TIMES[name] = round(time.perf_counter() - start, 1)
    return done


def print_times() -> None:
    print("Snakemake wall times (s):", ", ".join(f"{name} {seconds}" for name, seconds in TIMES.items()))


def files(root: Path, patterns: tuple[str, ...]) -> set[str]:
    return {p.relative_to(root).as_posix() for pattern in patterns for p in root.glob(pattern) if p.is_file()}


def first_difference(a: Path, b: Path) -> str:
    """Where two files differ, for a failure message: the first differing line of a table."""
    if a.suffix != ".tsv":
        return f"{a.stat().st_size} vs {b.stat().st_size} bytes"
    for number, (x, y) in enumerate(zip(a.read_text().splitlines(), b.read_text().splitlines(), strict=False), 1):
        if x != y:
            return f"line {number}: {x[:300]!r} vs {y[:300]!r}"
    return "one is longer"


def differences(a: Path, b: Path, patterns: tuple[str, ...]) -> list[str]:
    """The files matching ``patterns`` that one folder lacks or whose bytes differ, each with why."""
    in_a, in_b = files(a, patterns), files(b, patterns)
    found = [f"{name}: only in {a.name}" for name in sorted(in_a - in_b)]
    found += [f"{name}: only in {b.name}" for name in sorted(in_b - in_a)]
    for name in sorted(in_a & in_b):
        if not filecmp.cmp(a / name, b / name, shallow=False):
            found.append(f"{name}: differs ({first_difference(a / name, b / name)})")
    return found


def assert_same_outputs(reference: Path, other: Path, patterns: tuple[str, ...] = COMPARED) -> int:
    """Every file of ``patterns`` byte-identical in both folders; returns how many were compared."""
    for pattern in patterns:  # a pattern that matched nothing would prove nothing
        assert any(reference.glob(pattern)), pattern
    found = differences(reference, other, patterns)
    compared = files(reference, patterns)
    assert not found, f"{len(found)} of {len(compared)} files differ:\n" + "\n".join(found)
    return len(compared)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny demo, uninterrupted."""
    directory = tmp_path_factory.mktemp("reference")
    tiny_config(directory)
    timed("reference", [*SNAKEMAKE, *CORES, "--directory", str(directory), *TARGETS], directory)
    return directory


# ---------------------------------------------------------------- kill -9 and resume


@dataclass
class Kill:
    """The job in progress when the whole workflow was killed, and what was on disk then."""

    job: str
    seconds: float  # after the start of the Snakemake run that was killed
    state: dict = field(default_factory=dict)


@dataclass
class Interrupted:
    directory: Path
    features_kill: Kill
    training_kill: Kill
    extract_log: str  # the rerun's log of the feature-extraction job that the first kill stopped


def start(directory: Path, name: str, *args: str) -> subprocess.Popen:
    """Snakemake in a session of its own: one killpg ends it and every job it started."""
    with (directory / f"{name}.out").open("w") as out:
        return subprocess.Popen(
            [*SNAKEMAKE, *CORES, "--directory", str(directory), *args, *TARGETS],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to Snakemake's process group; return once no process of the group is left."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"processes of group {process.pid} outlived SIGKILL")


def kill_when(process: subprocess.Popen, in_progress, directory: Path, name: str, timeout: float = 1200) -> Kill:
    """kill -9 the whole workflow as soon as ``in_progress()`` names a running job; fail if none comes."""
    begin = time.perf_counter()
    while (job := in_progress()) is None:
        if process.poll() is not None or time.perf_counter() - begin > timeout:
            if process.poll() is None:
                kill_group(process)
            output = (directory / f"{name}.out").read_text()[-3000:]
            pytest.fail(f"{name}: no job to kill came (exit {process.returncode}):\n{output}")
        time.sleep(0.05)
    kill_group(process)
    return Kill(job, round(time.perf_counter() - begin, 1))


def staged(directory: Path, cohort: str) -> list[str]:
    """Slides whose features an extraction job has finished (written atomically under staged/)."""
    folder = directory / "results" / cohort / "features" / ENCODER / "staged"
    return sorted(p.stem for p in folder.glob("*.h5") if not p.name.startswith("."))


def sheet_slides(directory: Path, cohort: str) -> list[str]:
    """A demo cohort's slides (one extraction job encodes them all: slides_per_job is 16)."""
    sheet = directory / "resources" / "demo" / cohort / "sheets" / "slides.tsv"
    return list(pd.read_csv(sheet, sep="\t", dtype=str)["slide_id"]) if sheet.is_file() else []


def extraction_mid_way(directory: Path, cohorts: list[str]):
    """A cohort whose extraction job has finished a slide and has at least two more to encode."""

    def check():
        for cohort in cohorts:
            done, slides = staged(directory, cohort), sheet_slides(directory, cohort)
            if slides and 1 <= len(done) <= len(slides) - 2:
                return cohort
        return None

    return check


def training_in_progress(directory: Path, since: float, wsi_cohorts: list[str]):
    """Once every cohort's features are summarised: a train_fold job of this run that has not
    written its fold yet (its log, which the script opens after its imports, is newer than
    ``since``)."""
    summaries = [directory / "results" / c / "features" / ENCODER / "features_summary.tsv" for c in wsi_cohorts]

    def check():
        if not all(p.is_file() for p in summaries):
            return None
        for log in (directory / "logs" / "train_fold").glob("*/*/fold_*.log"):
            cohort, variant, fold = log.parent.parent.name, log.parent.name, log.stem
            fold_dir = directory / "results" / cohort / "models" / variant / fold
            try:
                fresh = log.stat().st_mtime >= since
            except FileNotFoundError:
                continue
            if fresh and not (fold_dir / "predictions.tsv").exists():
                return f"{cohort}/{variant}/{fold}"
        return None

    return check


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Interrupted:
    """The tiny demo killed during feature extraction, rerun, killed during training, rerun."""
    directory = tmp_path_factory.mktemp("interrupted")
    config = tiny_config(directory)
    wsi = [name for name, cohort in config["cohorts"].items() if "wsi" in cohort["modalities"]]
    begin = time.perf_counter()

    features_kill = kill_when(start(directory, "first"), extraction_mid_way(directory, wsi), directory, "first")
    cohort = features_kill.job
    features = directory / "results" / cohort / "features" / ENCODER
    features_kill.state = {
        "staged": staged(directory, cohort),
        "slides": sheet_slides(directory, cohort),
        "job record": (features / "batches" / "0.tsv").exists(),
        "features summary": (features / "features_summary.tsv").exists(),
        "summary table": (directory / "results" / "evaluation" / "table.tsv").exists(),
    }
    run([*SNAKEMAKE, "--directory", str(directory), "--unlock"], directory)

    since = time.time() - 1  # file times may be coarser than the clock
    second = start(directory, "second", "--rerun-incomplete")
    training_kill = kill_when(second, training_in_progress(directory, since, wsi), directory, "second")
    killed_cohort, variant, fold = training_kill.job.split("/")
    killed = directory / "results" / killed_cohort / "models" / variant / fold
    training_kill.state = {
        "fold files": sorted(p.name for p in killed.glob("*")),
        "summary table": (directory / "results" / "evaluation" / "table.tsv").exists(),
    }
    extract_log = (directory / "logs" / "extract_features" / cohort / ENCODER / "batch0.log").read_text()
    run([*SNAKEMAKE, "--directory", str(directory), "--unlock"], directory)

    run([*SNAKEMAKE, *CORES, "--directory", str(directory), "--rerun-incomplete", *TARGETS], directory)
    TIMES["interrupted (two kills, two reruns)"] = round(time.perf_counter() - begin, 1)
    return Interrupted(directory, features_kill, training_kill, extract_log)


def test_kill_during_feature_extraction_then_rerun_gives_the_same_outputs(reference, interrupted):
    """kill -9 while a cohort's extraction job is mid-way; --unlock and a rerun give the
    uninterrupted run's predictions, weights and tables byte for byte (this run is also killed
    once during training: see the next test)."""
    kill = interrupted.features_kill
    print(f"killed during {kill.job}'s feature extraction, {kill.seconds} s in: {kill.state}")
    # mid-way: some slides written, two or more to go, neither the job's record nor the summary
    assert 1 <= len(kill.state["staged"]) <= len(kill.state["slides"]) - 2
    assert not (kill.state["job record"] or kill.state["features summary"] or kill.state["summary table"])
    # the rerun's job kept the slides the killed one had finished and encoded only the others
    for slide in kill.state["slides"]:
        assert (KEPT.format(slide) in interrupted.extract_log) == (slide in kill.state["staged"]), slide
    print(f"{assert_same_outputs(reference, interrupted.directory)} files byte-identical to the uninterrupted run")
    print_times()


def test_kill_during_training_then_rerun_gives_the_same_outputs(reference, interrupted):
    """kill -9 while a fold trains (every cohort's features done); --unlock and a rerun give the
    uninterrupted run's predictions, weights and tables byte for byte."""
    kill = interrupted.training_kill
    print(f"killed during train_fold {kill.job}, {kill.seconds} s into the rerun: {kill.state}")
    assert not {"predictions.tsv", "weights.safetensors"} & set(kill.state["fold files"])
    assert not kill.state["summary table"]
    print(f"{assert_same_outputs(reference, interrupted.directory)} files byte-identical to the uninterrupted run")
    print_times()


# ---------------------------------------------------------------- determinism


def test_the_same_seed_gives_the_same_results(reference, interrupted):
    """A second run of the whole tiny demo with the same seed (the interrupted one) gives the same
    predictions, weights and tables; the figures drawn (one model's, PNG and PDF) repeat too."""
    n = assert_same_outputs(reference, interrupted.directory)
    figures = sorted(files(reference, FIGURES))
    found = differences(reference, interrupted.directory, FIGURES)
    print(f"{n} tables and weights files identical; {len(figures) - len(found)} of {len(figures)} figures identical")
    assert len(figures) == 10 and not found, "\n".join(found)
    print_times()


# ---------------------------------------------------------------- adding a slide


def dry_run_jobs(listing: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of each job of a dry run's listing."""
    jobs = []
    for block in re.split(r"\n(?=\S)", listing):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            fields = dict(line.strip().split(": ", 1) for line in block.splitlines()[1:] if ": " in line)
            wildcards = dict(w.split("=", 1) for w in fields.get("wildcards", "").split(", ") if "=" in w)
            jobs.append((head.group(1), wildcards))
    return jobs


def rule_counts(stdout: str) -> dict[str, int]:
    """Jobs per rule from ``snakemake -n --quiet rules``."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit() and row[0] != "total"}


def user_cohort_from_demo(reference: Path, directory: Path) -> tuple[pd.DataFrame, str]:
    """The reference's generated tiny_tcga sheets and files as the user cohort ``mine``, less one
    slide: the last of the first patient with two. Returns the full slides sheet and that slide."""
    shutil.copytree(reference / "resources" / "demo" / "tiny_tcga", directory / "mine")
    slides = pd.read_csv(directory / "mine" / "sheets" / "slides.tsv", sep="\t", dtype=str)
    slides["path"] = slides["path"].str.replace("resources/demo/tiny_tcga/", "mine/", regex=False)
    counts = slides["patient_id"].value_counts()
    patient = next(p for p in slides["patient_id"] if counts[p] >= 2)
    left_out = slides.loc[slides["patient_id"] == patient, "slide_id"].iloc[-1]
    slides[slides["slide_id"] != left_out].to_csv(directory / "mine" / "slides.tsv", sep="\t", index=False)
    config = {
        "cohorts": {
            "mine": {
                "modalities": ["wsi", "genomics"],
                "patients": "mine/sheets/patients.tsv",
                "slides": "mine/slides.tsv",
                "genomics": {"table": "mine/genomics.csv", "signatures": "mine/signatures.csv"},
            }
        },
        "features": {"weights": "random"},
        # the tiny demo's training: deref and coxph read the slides, snn the genomics only
        "training": tiny_config(directory)["training"],
    }
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return slides, left_out


def test_adding_a_slide_reruns_only_what_reads_it(reference, tmp_path):
    slides, added = user_cohort_from_demo(reference, tmp_path)
    results = tmp_path / "results" / "mine"
    features = results / "features" / ENCODER
    targets = ["summary_table", str(features.relative_to(tmp_path) / "features_summary.tsv")]
    command = [*SNAKEMAKE, *CORES, "--directory", str(tmp_path), *targets]
    timed("user cohort less one slide", command, tmp_path)
    others = [s for s in slides["slide_id"] if s != added]
    assert sorted(pd.read_csv(features / "features_summary.tsv", sep="\t", dtype=str)["slide_id"]) == sorted(others)
    untouched = [
        *(results / "patches" / f"{s}.h5" for s in others),
        results / "genomics" / "pathways.h5",
        *results.glob("splits/*.csv"),
        *results.glob("models/snn/fold_*/*"),
    ]
    before = {p: p.stat().st_mtime_ns for p in untouched}
    # a staged features file is linked again (and so touched), never rewritten: a rewrite is a new inode
    kept = {s: (features / "staged" / f"{s}.h5").stat().st_ino for s in others}

    slides.to_csv(tmp_path / "mine" / "slides.tsv", sep="\t", index=False)  # its row back, in its place
    listing = run([*command, "-n"], tmp_path)
    jobs = dry_run_jobs(listing.stdout + listing.stderr)
    counts = rule_counts(run([*command, "-n", "--quiet", "rules"], tmp_path).stdout)
    print("jobs after adding the slide:", counts)
    assert counts == Counter(rule for rule, _ in jobs)
    assert [w["slide"] for rule, w in jobs if rule == "tile_slide"] == [added]
    assert [w["batch"] for rule, w in jobs if rule == "extract_features"] == ["0"]
    trained = {(w["variant"], w["fold"]) for rule, w in jobs if rule == "train_fold"}
    assert trained == {(model, fold) for model in ("deref", "coxph") for fold in ("0", "1")}
    assert not {"build_pathways", "make_splits", "crop_mri", "gather_mri", "demo_cohort"} & set(counts)

    timed("adding the slide back", command, tmp_path)
    log = (tmp_path / "logs" / "extract_features" / "mine" / ENCODER / "batch0.log").read_text()
    assert all(KEPT.format(slide) in log for slide in others), log
    assert KEPT.format(added) not in log and re.search(rf"slide {re.escape(added)}: \d+ patches in", log), log
    record = pd.read_csv(features / "batches" / "0.tsv", sep="\t", dtype={"slide_id": str})
    assert dict(zip(record["slide_id"], record["reused"], strict=True)) == {s: s != added for s in slides["slide_id"]}
    changed = [p.relative_to(tmp_path).as_posix() for p in untouched if p.stat().st_mtime_ns != before[p]]
    assert not changed, changed
    assert {s: (features / "staged" / f"{s}.h5").stat().st_ino for s in others} == kept
    done = run([*command, "-n"], tmp_path)
    assert "Nothing to be done" in done.stdout + done.stderr

    # the same data as the reference's tiny_tcga, trained in other runs: the same bytes (snn in an
    # uninterrupted run of its own, deref and coxph after the slide came back)
    for model in ("deref", "snn", "coxph"):
        for fold in (0, 1):
            for name in ("predictions.tsv", "weights.safetensors"):
                mine = results / "models" / model / f"fold_{fold}" / name
                theirs = reference / "results" / "tiny_tcga" / "models" / model / f"fold_{fold}" / name
                assert filecmp.cmp(mine, theirs, shallow=False), f"{mine} differs from {theirs}"
    print_times()
