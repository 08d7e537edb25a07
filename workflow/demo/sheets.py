"""A demo cohort in a real cohort's terms: the sheets, files and config block a user would give.

All of it follows from the spec, so the Snakefile knows a demo cohort's sheets and files at parse
time, before the demo_cohort rule writes them, and the cohort loader checks it as any other cohort.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from workflow.demo.design import LIVER_SEQUENCES, DemoSpec, slides_table, truth_table

# The generator's own tables: the hidden truth per patient, and each slide's scan settings.
TRUTH, SLIDE_TABLE = "truth.tsv", "slides.tsv"


@dataclass(frozen=True)
class DemoCohort:
    """One demo cohort: its design, and the sheets and files its folder ``resources/demo/<name>/`` holds."""

    name: str
    spec: DemoSpec

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> DemoCohort:
        """The demo of a cohort's config block: its ``demo:`` settings, made for its modalities."""
        return cls(name, DemoSpec(**cfg["demo"], modalities=tuple(cfg.get("modalities", ()))))

    def path(self, file: str) -> str:
        """Path of one of the cohort's files, relative to the working directory."""
        return f"resources/demo/{self.name}/{file}"

    @cached_property
    def truth(self) -> pd.DataFrame:
        """The hidden truth, one row per patient (``truth_table``)."""
        return truth_table(self.spec)

    @cached_property
    def slides(self) -> pd.DataFrame:
        """Every slide of the design; a demo without wsi renders none, but its genomics has their rows."""
        return slides_table(self.spec, self.truth)

    @property
    def genomics(self) -> dict[str, str]:
        """The MCAT table and signatures file of a TCGA-like demo."""
        return {"table": self.path("genomics.csv"), "signatures": self.path("signatures.csv")}

    def sheet_path(self, kind: str) -> str:
        """Where the sheet of one kind (patients, slides, mri) is written."""
        return self.path(f"sheets/{kind}.tsv")

    @cached_property
    def sheets(self) -> dict[str, pd.DataFrame]:
        """Path -> content of each sheet a user would write: patients, and slides and MRI when generated."""
        patients = self.truth[["patient_id", "survival_months", "censorship", "age", "is_female"]].copy()
        sheets = {self.sheet_path("patients"): patients}
        if "wsi" in self.spec.modalities:
            slides = self.slides[["slide_id", "patient_id"]].copy()
            slides["path"] = [self.path(f"slides/{s}.svs") for s in slides["slide_id"]]
            sheets[self.sheet_path("slides")] = slides
        if "mri" in self.spec.modalities:
            sheets[self.sheet_path("mri")] = pd.DataFrame(
                [
                    {
                        "patient_id": p,
                        "sequence": seq,
                        "image": self.path(f"mri/{p}/{seq}.nii.gz"),
                        "mask": self.path(f"mri/{p}/tumour_mask.nii.gz"),
                    }
                    for p in self.truth["patient_id"]
                    for seq in LIVER_SEQUENCES
                ]
            )
        return sheets

    def config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The cohort's config block with ``demo:`` replaced by the paths of the demo's sheets and files.

        The demo owns those paths; the block's other settings (MRI sequences, splits, models) stay.
        """
        block = {key: value for key, value in cfg.items() if key != "demo"}
        block["patients"] = self.sheet_path("patients")
        if "wsi" in self.spec.modalities:
            block["slides"] = self.sheet_path("slides")
        if "genomics" in self.spec.modalities:
            block["genomics"] = self.genomics | {"patient_column": "case_id"}
        if "mri" in self.spec.modalities:
            block["mri"] = {"sequences": list(LIVER_SEQUENCES), **cfg.get("mri", {}), "sheet": self.sheet_path("mri")}
        return block

    @cached_property
    def files(self) -> tuple[str, ...]:
        """Every file the demo_cohort rule writes for the cohort."""
        files = [self.path(TRUTH), *self.sheets]
        if "wsi" in self.spec.modalities:
            files += [self.path(SLIDE_TABLE), *self.sheets[self.sheet_path("slides")]["path"]]
        if "genomics" in self.spec.modalities:
            files += self.genomics.values()
        if "mri" in self.spec.modalities:
            mri = self.sheets[self.sheet_path("mri")]
            files += sorted(set(mri["image"]) | set(mri["mask"]))
        return tuple(files)
