"""The whole workflow through a real SLURM (Snakemake's slurm executor and profiles/slurm) gives
exactly the outputs of a local run.

A single-node SLURM with accounting (tests/local_slurm.py) is installed with apt-get when missing
and started on localhost where that is possible: as root, with apt-get or the programs present,
unless MSW_TEST_SLURM=0. Elsewhere the test skips with the reason; with MSW_TEST_SLURM=1 (or CI
set) a SLURM that cannot be installed fails the test instead. Every step runs under a hard
``timeout -s KILL``; the daemons end with this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tests import local_slurm
from tests.conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
PROFILE = ROOT / "profiles" / "slurm"
RUN_LIMIT = 900  # seconds for one whole run of the workflow, then SIGKILL
# Threads that change floating-point results are the same in both runs (the local run's --cores
# and a SLURM job's CPUs would differ otherwise); training's come from the config (1).
THREADS = ["--set-threads", "extract_features=2", "demo_cohort=2"]
# The site values of profiles/slurm, replaced by this cluster's on the command line.
SITE = {
    "your_account": local_slurm.ACCOUNT,
    "your_cpu_partition": local_slurm.CPU_PARTITION,
    "your_gpu_partition": local_slurm.GPU_PARTITION,
}
GPU_RULES = {"extract_features", "train_fold"}
# What legitimately differs between two runs of the same job, named narrowly; every other file under
# results/ must be byte-identical (figures included: PDFs take SOURCE_DATE_EPOCH as their date),
# and every HDF5 dataset and every other attribute bit-identical.
VOLATILE_H5_ATTRS = {
    "seconds",  # wall-clock time of tiling (coords) and of a slide's encoding (features)
    "patches_per_second",  # encoding speed
    # features' resume key: hashes the slide's absolute path and mtime and the coordinates file's
    # bytes (which hold tiling's `seconds`), so it differs between any two runs by design
    "provenance",
}
VOLATILE_COLUMNS = {  # table (by its path's pattern) -> columns of timings
    "*/patches/tiling_summary.tsv": {"seconds"},
    "*/features/*/features_summary.tsv": {"seconds", "patches_per_second"},
    "*/features/*/batches/*.tsv": {"seconds"},
}
VOLATILE_JSON_KEYS = {"*/models/*/fold_*/fold.json": {"seconds", "peak_rss_mb"}}  # time and memory of training


def unavailable(reason) -> None:
    """Skip with the reason; fail instead where SLURM is required (MSW_TEST_SLURM=1, or CI set)."""
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    if os.environ.get("MSW_TEST_SLURM") == "1" or (ci and os.environ.get("MSW_TEST_SLURM") != "0"):
        pytest.fail(f"SLURM is required here (MSW_TEST_SLURM=1 or CI) but cannot run: {reason}")
    pytest.skip(f"no local SLURM: {reason}")


@pytest.fixture(scope="module")
def slurm_cluster():
    """The local cluster, started for this module and stopped after it; skips where it cannot run."""
    reason = local_slurm.why_not()
    if reason is not None:
        unavailable(reason)
    cluster = local_slurm.LocalSlurm()
    try:
        cluster.acquire(timeout=1200)  # another session on this machine may be using it
    except local_slurm.Unavailable as error:
        unavailable(error)
    started = time.monotonic()
    try:
        installed = local_slurm.install(timeout=300)
        cluster.start()
    except BaseException as error:
        cluster.stop()  # nothing may keep running
        cluster.release()
        if isinstance(error, local_slurm.Unavailable):
            unavailable(error)
        raise
    cluster.timings = {"install_s": round(installed), "start_s": round(time.monotonic() - started - installed)}
    try:
        yield cluster
    finally:
        cluster.stop()
        cluster.release()


def slurm_config(path: Path) -> dict:
    """Every rule at least once, at the smallest size: slides with genomics (DeReF, the figures' model,
    and Cox PH, the reference) and an MRI-only cohort (Cox PH)."""
    config = {
        "cohorts": {
            "tiny_tcga": {
                "modalities": ["wsi", "genomics"],
                "demo": {"kind": "tcga", "seed": 5, "n_patients": 4, "frac_two_slides": 0.4},
            },
            "tiny_liver": {
                "modalities": ["mri"],
                "demo": {"kind": "liver", "seed": 6, "n_patients": 4},
                "models": ["coxph"],
            },
        },
        "features": {"weights": "random"},
        "mri_roi": {"roi_shape": [16, 48, 48]},
        "training": {
            "models": ["deref", "coxph"],
            "folds": 2,
            "epochs": 1,
            "n_bins": 2,
            "bins": "cohort",
            "selection": "last",
            "threads": 1,
        },
        "experiments": {"run": []},
    }
    (path / "config").mkdir()
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return config


class Run:
    """Snakemake on the tiny cohorts in a folder of its own, in the background, killed (with every
    process it started here) after RUN_LIMIT seconds; its output goes to snakemake.out there."""

    def __init__(self, workdir: Path, extra: list[str], env: dict):
        self.workdir = workdir
        self.started = time.monotonic()
        with (workdir / "snakemake.out").open("w") as out:
            self.process = subprocess.Popen(
                ["timeout", "-s", "KILL", str(RUN_LIMIT), *SNAKEMAKE, "--directory", str(workdir), *THREADS, *extra],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def finish(self) -> str:
        """Wait for it; its output, or a failed test with the output and the SLURM logs."""
        try:
            returncode = self.process.wait(timeout=RUN_LIMIT + 30)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = -9
        self.seconds = time.monotonic() - self.started
        output = (self.workdir / "snakemake.out").read_text(errors="replace")
        if returncode != 0:
            logs = "\n".join(
                f"--- {log.relative_to(self.workdir)}\n{log.read_text(errors='replace')[-1500:]}"
                for log in sorted((self.workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
            )
            killed = " (killed by the time limit)" if returncode in (124, 137, -9) else ""
            pytest.fail(f"snakemake in {self.workdir} failed ({returncode}){killed}:\n{output[-6000:]}\n{logs[-6000:]}")
        return output


def profile_overrides() -> list[str]:
    """--default-resources and --set-resources of profiles/slurm with the site values replaced: a
    command-line list replaces the profile's whole list, so every entry is repeated."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    found = {str(v) for v in profile["default-resources"].values()} | {
        str(v) for resources in profile["set-resources"].values() for v in resources.values()
    }
    assert set(SITE) <= found, f"profiles/slurm lacks site placeholders {set(SITE) - found}"
    default = [f"{key}={SITE.get(str(value), value)}" for key, value in profile["default-resources"].items()]
    per_rule = [
        f"{rule}:{key}={SITE.get(str(value), value)}"
        for rule, resources in profile["set-resources"].items()
        for key, value in resources.items()
    ]
    return ["--default-resources", *default, "--set-resources", *per_rule]


@pytest.mark.slurm
@pytest.mark.integration
def test_workflow_through_slurm_equals_a_local_run(slurm_cluster, tmp_path):
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, slurm):
        workdir.mkdir()
        slurm_config(workdir)
    # matplotlib writes this date into PDFs instead of the time of drawing
    env = {**slurm_cluster.env, "SOURCE_DATE_EPOCH": "1700000000", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}

    # Both at once: the SLURM run mostly waits for the scheduler and its status checks.
    local_run = Run(local, ["--cores", "2"], env)
    slurm_run = Run(
        slurm,
        [
            "--workflow-profile",
            str(PROFILE),
            *profile_overrides(),
            # The plugin polls sacct 10 s later each time no job has finished (1, 11, 21, ... s):
            # with several jobs queued, one finishing resets that for all of them.
            "--jobs",
            "4",
            "--latency-wait",
            "10",
            "--retries",
            "0",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--seconds-between-status-checks",
            "2",
        ],
        env,
    )
    try:
        local_run.finish()
        log = slurm_run.finish()
    finally:
        for run in (local_run, slurm_run):
            if run.process.poll() is None:
                run.kill()

    # every job went to SLURM but the rules declared local: the accounting holds exactly the jobs
    # submitted, all completed under the account, the GPU rules with a GPU on the GPU partition
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    fields = ["id", "partition", "account", "state", "tres", "comment"]
    accounting = slurm_cluster.command(
        "sacct",
        "-n",
        "-X",
        "-P",
        "-S",
        "now-1days",
        "--name",
        run_id,
        "-o",
        "JobID,Partition,Account,State,AllocTRES,Comment",
    ).stdout
    jobs = [dict(zip(fields, line.split("|"), strict=True)) for line in accounting.splitlines()]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert submitted and sorted(job["id"] for job in jobs) == sorted(submitted), (accounting, log[-3000:])
    assert {job["state"] for job in jobs} == {"COMPLETED"}, accounting
    assert {job["account"] for job in jobs} == {local_slurm.ACCOUNT}, accounting
    groups = yaml.safe_load((PROFILE / "config.yaml").read_text())["groups"]
    names = {slurm_job_name(job["comment"], set(groups.values())) for job in jobs}
    for job in jobs:
        gpu = slurm_job_name(job["comment"], set(groups.values())) in GPU_RULES
        assert job["partition"] == (local_slurm.GPU_PARTITION if gpu else local_slurm.CPU_PARTITION), job
        assert ("gres/gpu=1" in job["tres"]) == gpu, job
    remote = set(re.findall(r"^rule (\w+):", log, re.M))
    assert {rule for rule in remote if rule not in names and groups.get(rule) not in names} == set(), (names, remote)
    assert set(re.findall(r"^localrule (\w+):", log, re.M)) <= declared_local_rules() | {"all"}
    assert GPU_RULES | {"tiling", "mri_crops", "evaluation", "figures"} <= names, names

    differences = compare_trees(local / "results", slurm / "results")
    assert not differences, "\n".join(differences)
    slurm_cluster.timings.update(
        local_run_s=round(local_run.seconds), slurm_run_s=round(slurm_run.seconds), slurm_jobs=len(jobs)
    )
    files = sum(1 for path in (local / "results").rglob("*") if path.is_file())
    print(
        f"\nSLURM test: {len(jobs)} SLURM jobs COMPLETED in sacct, {files} result files equal; {slurm_cluster.timings}"
    )


def slurm_job_name(comment: str, groups: set[str]) -> str:
    """The rule (or group) of a SLURM job from the comment the plugin gives it:
    rule_<rule>[_wildcards_<values>] or rule_<group>_<its rules>."""
    name = re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_"))
    return next((group for group in groups if name.startswith(f"{group}_")), name)


def declared_local_rules() -> set[str]:
    """Rules with `localrule: True` or named by a `localrules:` directive in rules/*.smk."""
    names = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"^\s*rule (?=\w+:)", text, flags=re.M)[1:]:
            if re.search(r"^\s*localrule:\s*True", block, re.M):
                names.add(block.split(":", 1)[0])
        for listed in re.findall(r"^localrules:\s*(.+)$", text, re.M):
            names.update(n.strip() for n in listed.split(",") if n.strip())
    return names


@pytest.mark.integration
@pytest.mark.parametrize("name", ["slurm", "local-gpu"])
def test_profile_names_rules_of_the_workflow_and_plans_the_demo(name):
    """Snakemake ignores a rule name it does not know in set-resources, set-threads or groups: a
    renamed rule would lose its settings silently. And the profile plans the default config."""
    profile = yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())
    named = set(profile.get("set-resources", {})) | set(profile.get("set-threads", {})) | set(profile.get("groups", {}))
    rules = subprocess.run(
        [*SNAKEMAKE, "--list-rules"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert named - set(rules) == set(), f"profiles/{name} names rules the workflow does not have"
    assert set(profile.get("groups", {}).values()) == set(profile.get("group-components", {}))
    done = subprocess.run(
        [*SNAKEMAKE, "-n", "--quiet", "rules", "--workflow-profile", str(ROOT / "profiles" / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Using workflow specific profile {ROOT / 'profiles' / name}" in done.stdout + done.stderr


# ---- comparing two results folders ------------------------------------------------------------


def compare_trees(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    differences = [f"only in the local run: {p}" for p in sorted(files_a - files_b)]
    differences += [f"only in the SLURM run: {p}" for p in sorted(files_b - files_a)]
    for path in sorted(files_a & files_b):
        columns = next((c for pattern, c in VOLATILE_COLUMNS.items() if path.match(pattern)), None)
        keys = next((k for pattern, k in VOLATILE_JSON_KEYS.items() if path.match(pattern)), None)
        if path.suffix == ".h5":
            differences += [f"{path}: {d}" for d in compare_h5(a / path, b / path)]
        elif columns is not None:
            if drop_columns(a / path, columns) != drop_columns(b / path, columns):
                differences.append(f"{path}: differs outside the columns {sorted(columns)}")
        elif keys is not None:
            if drop_keys(a / path, keys) != drop_keys(b / path, keys):
                differences.append(f"{path}: differs outside the keys {sorted(keys)}")
        elif (a / path).read_bytes() != (b / path).read_bytes():
            differences.append(f"{path}: contents differ")
    return differences


def drop_columns(path: Path, columns: set[str]) -> list[list[str]]:
    """The table's cells as written (no parsing of numbers), less the named columns, which must exist."""
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert columns <= set(rows[0]), f"{path}: no column {sorted(columns - set(rows[0]))}"
    keep = [i for i, name in enumerate(rows[0]) if name not in columns]
    return [[row[i] for i in keep] for row in rows]


def drop_keys(path: Path, keys: set[str]) -> dict:
    data = json.loads(path.read_text())
    assert keys <= set(data), f"{path}: no key {sorted(keys - set(data))}"
    return {key: value for key, value in data.items() if key not in keys}


def compare_h5(a: Path, b: Path) -> list[str]:
    """Datasets (dtype, shape, values) and attributes of every group, bit for bit, except
    VOLATILE_H5_ATTRS."""
    differences = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:

        def attrs(obj, name):
            keys_a = set(obj[0].attrs) - VOLATILE_H5_ATTRS
            keys_b = set(obj[1].attrs) - VOLATILE_H5_ATTRS
            if keys_a != keys_b:
                differences.append(f"{name}: attributes {sorted(keys_a ^ keys_b)} in one run only")
            for key in sorted(keys_a & keys_b):
                if not same(obj[0].attrs[key], obj[1].attrs[key]):
                    differences.append(f"{name}: attribute {key}: {obj[0].attrs[key]!r} != {obj[1].attrs[key]!r}")

        def visit(ga, gb, name):
            attrs((ga, gb), name or "/")
            if set(ga) != set(gb):
                differences.append(f"{name or '/'}: members {sorted(set(ga) ^ set(gb))} in one run only")
            for key in sorted(set(ga) & set(gb)):
                xa, xb = ga[key], gb[key]
                path = f"{name}/{key}"
                if isinstance(xa, h5py.Group) and isinstance(xb, h5py.Group):
                    visit(xa, xb, path)
                elif isinstance(xa, h5py.Dataset) and isinstance(xb, h5py.Dataset):
                    attrs((xa, xb), path)
                    if xa.dtype != xb.dtype or xa.shape != xb.shape or not same(xa[()], xb[()]):
                        differences.append(f"{path}: dataset differs")
                else:
                    differences.append(f"{path}: a group in one run, a dataset in the other")

        visit(fa, fb, "")
    return differences


def same(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        return x.tobytes() == y.tobytes()  # bit for bit, NaNs included
    return bool(np.array_equal(x, y))


def test_comparison_forgives_only_the_named_timings(tmp_path):
    """compare_trees finds any other difference: a dataset value, an attribute, a byte, a file."""
    for name, seconds in (("a", 1.0), ("b", 2.0)):
        root = tmp_path / name / "c" / "patches"
        root.mkdir(parents=True)
        with h5py.File(root / "s.h5", "w") as h5:
            h5.create_dataset("coords", data=np.arange(6).reshape(3, 2))
            h5["coords"].attrs.update(seconds=seconds, patch_size=256)
        (root / "tiling_summary.tsv").write_text(f"slide_id\tpatches\tseconds\ns\t3\t{seconds}\n")
        (root / "picture.png").write_bytes(b"\x89PNG same")
    a, b = tmp_path / "a", tmp_path / "b"
    assert compare_trees(a, b) == []

    with h5py.File(b / "c" / "patches" / "s.h5", "a") as h5:
        h5["coords"][0, 0] = 7
        h5["coords"].attrs["patch_size"] = 512
    (b / "c" / "patches" / "tiling_summary.tsv").write_text("slide_id\tpatches\tseconds\ns\t4\t2.0\n")
    (b / "c" / "patches" / "picture.png").write_bytes(b"\x89PNG diff")
    (b / "c" / "extra.md").write_text("")
    assert compare_trees(a, b) == [
        "only in the SLURM run: c/extra.md",
        "c/patches/picture.png: contents differ",
        "c/patches/s.h5: /coords: attribute patch_size: np.int64(256) != np.int64(512)",
        "c/patches/s.h5: /coords: dataset differs",
        "c/patches/tiling_summary.tsv: differs outside the columns ['seconds']",
    ]
