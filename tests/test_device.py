"""GPU claims with fake device lists: concurrent jobs on one machine each get their own GPU.

torch's CUDA queries are replaced by a list of UUIDs, as each job would see them under its own
CUDA_VISIBLE_DEVICES (SLURM sets it to the job's allocation). Claims made by other processes are
real ones: a child process holds a lock file while this one claims.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import ROOT
from workflow import device as device_module
from workflow.device import claim_device


def fake_gpus(monkeypatch, tmp_path, uuids):
    """Make torch see the GPUs ``uuids`` (in this order) and keep locks under tmp_path."""
    monkeypatch.setattr(device_module, "LOCK_DIR", tmp_path / "locks")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(uuids))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(uuids))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuids[i]))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"fake GPU {uuids[i]}")


def test_concurrent_claims_get_different_gpus_and_a_third_waits(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, tmp_path, ["GPU-aaa", "GPU-bbb"])
    with claim_device() as first, claim_device() as second:
        assert {str(first), str(second)} == {"cuda:0", "cuda:1"}
        started = time.monotonic()
        busy = pytest.raises(RuntimeError, match="all 2 GPUs stayed busy for 0 s; run with --resources gpu=N")
        with busy, claim_device(wait_seconds=0.3, poll_seconds=0.1):
            pass
        assert time.monotonic() - started >= 0.3
    with claim_device() as again:  # released on exit
        assert str(again) == "cuda:0"


def test_a_claim_is_released_when_the_job_fails(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, tmp_path, ["GPU-aaa"])
    with pytest.raises(ValueError), claim_device():
        raise ValueError("the job failed")
    with claim_device(wait_seconds=0) as device:
        assert str(device) == "cuda:0"


def hold_lock(tmp_path, uuid):
    """Another job (a real process) holding the claim on GPU ``uuid`` until it is killed."""
    code = textwrap.dedent(
        f"""
        import fcntl, pathlib, sys, time
        folder = pathlib.Path({str(tmp_path / "locks")!r}); folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / "gpu-{uuid}.lock", "w")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("held", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout.readline().strip() == "held"
    return child


def test_claims_follow_the_gpu_not_its_index_across_visible_device_lists(monkeypatch, tmp_path):
    # another job, which sees the GPUs in another order, holds GPU-bbb: here it is index 0
    child = hold_lock(tmp_path, "GPU-bbb")
    try:
        fake_gpus(monkeypatch, tmp_path, ["GPU-bbb", "GPU-aaa"])
        with claim_device(wait_seconds=0) as device:
            assert str(device) == "cuda:1"
        # a SLURM job allocated only GPU-bbb sees that one GPU and waits for it, never taking another
        fake_gpus(monkeypatch, tmp_path, ["GPU-bbb"])
        with (
            pytest.raises(RuntimeError, match="all 1 GPUs stayed busy"),
            claim_device(wait_seconds=0.2, poll_seconds=0.1),
        ):
            pass
    finally:
        child.kill()
        child.wait()
    # the lock died with the process that held it
    with claim_device(wait_seconds=0) as device:
        assert str(device) == "cuda:0"


def test_no_visible_gpu_means_the_cpu(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, tmp_path, [])
    with claim_device() as device:
        assert device.type == "cpu"
    assert not (tmp_path / "locks").exists()
