"""Choosing where to run: a free GPU claimed with a lock file, or the CPU when there is none.

Shared by feature extraction and training. Snakemake's ``resources: gpu=1`` limits how many GPU
jobs run at once but never says which GPU a job should use, so several jobs on one machine would
all pick GPU 0. Each job here takes the first GPU (by UUID, so jobs that see different
CUDA_VISIBLE_DEVICES never clash) whose lock it can hold, and keeps it until it ends; the lock
dies with the process, even on a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)
LOCK_DIR = Path(os.environ.get("MSW_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "msw-gpu-locks"))


def _gpu_uuid(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    return str(getattr(props, "uuid", f"index{index}"))


@contextlib.contextmanager
def claim_device(wait_seconds: float = 3600.0, poll_seconds: float = 5.0) -> Iterator[torch.device]:
    """Yield a GPU this process holds exclusively, or the CPU when no GPU is visible."""
    if not torch.cuda.is_available():
        log.info("no GPU visible: running on the CPU")
        yield torch.device("cpu")
        return
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        for index in range(torch.cuda.device_count()):
            handle = open(LOCK_DIR / f"gpu-{_gpu_uuid(index)}.lock", "w")  # noqa: SIM115 - held while the job runs
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            log.info("claimed GPU %d (%s)", index, torch.cuda.get_device_name(index))
            try:
                yield torch.device("cuda", index)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"all {torch.cuda.device_count()} GPUs stayed busy for {wait_seconds:.0f} s; run with --resources gpu=N"
            )
        time.sleep(poll_seconds)
