"""DeReF's switches: the paper's text (defaults), the authors' code (``reference()``) and the paper's ablations.

Torch-free, so the workflow can check an experiment variant's options at parse time.

Differences between the paper and the authors' code (docs/models.md §1.9), one switch each:

- ``rca``: "reference" swaps the vectors of Algorithm 1 and takes one softmax over each full row
  of M before slicing; "paper" softmaxes each sub-block over the summed axis.
- ``segments``: "reference" draws the number of segments L from {2, 4, ..., 64}.
- ``gate``: "reference" is one shared Linear(128 -> 1) over the four un-reorganised features,
  softmax across them, which ties the expert count to 4.
- ``final_relu``: a ReLU after the specific encoders and the experts.
- ``nystrom_padding``: Nyström zero-token padding of sequences shorter than the 128 landmarks.
- ``test_rfr``: at evaluation, "average" takes the mean hazards over every segment choice
  (deterministic); "random" draws one choice per call from a seeded generator, as the reference.

The ablations of the paper's Tables IV, VI and VII (Table V's distances are a training setting):

- ``explore=False``: no V_explore; three decoupled features (W/o V_explore).
- ``decouple=False``: no decoupling module; the two encoders' class tokens are reorganised and
  fused directly, with no decoupling loss (W/o Dec).
- ``decoupler``: what computes V_share and V_explore: "rca" (Algorithm 1), "concat_mlp" (an MLP
  on the concatenated class tokens, W/o RCA¹) or "cross_attention" (the inter-modality block of
  M only, plain cross-attention without the intra-modality regions, W/o RCA²).
- ``rfr=False``: no reorganisation; the features are concatenated in order (W/o RFR).
- ``moe=False``: one MLP of an expert's shape and no gate (W/o MoE).
- ``segment_length``: a fixed segment length instead of a random one from {2, 8, 16, 32, 64}.
- ``n_experts``: the number of experts (2, 4, 6, 8 in Table VII).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

DECOUPLERS = ("rca", "concat_mlp", "cross_attention")


@dataclass(frozen=True)
class DeReFOptions:
    """Switches between the paper's text (defaults), the authors' code (``reference()``) and the ablations."""

    rca: str = "paper"
    segments: str = "paper"
    gate: str = "paper"
    n_experts: int = 4
    final_relu: bool = False
    nystrom_padding: bool = False
    test_rfr: str = "average"
    dropout: float = 0.25
    explore: bool = True
    decouple: bool = True
    decoupler: str = "rca"
    rfr: bool = True
    moe: bool = True
    segment_length: int | None = None

    @classmethod
    def reference(cls) -> DeReFOptions:
        return cls(
            rca="reference",
            segments="reference",
            gate="reference",
            n_experts=4,
            final_relu=True,
            nystrom_padding=True,
            test_rfr="random",
        )

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("rca", self.rca, ("paper", "reference")),
            ("segments", self.segments, ("paper", "reference")),
            ("gate", self.gate, ("paper", "reference")),
            ("test_rfr", self.test_rfr, ("average", "random")),
            ("decoupler", self.decoupler, DECOUPLERS),
        ):
            if value not in allowed:
                raise ValueError(f"DeReF option {name}={value!r}; choose one of {allowed}")
        if self.n_experts < 1:
            raise ValueError(f"DeReF option n_experts={self.n_experts}; it must be at least 1")
        if self.gate == "reference" and (self.n_experts != 4 or not (self.explore and self.decouple and self.moe)):
            raise ValueError(
                "the reference gate weighs the 4 decoupled features, so it needs exactly 4 experts, V_explore, "
                "the decoupling module and the MoE; set gate: paper for this ablation"
            )
        if not self.decouple and (not self.explore or self.decoupler != "rca"):
            raise ValueError("without the decoupling module there is no V_explore or decoupler to change")
        if not self.rfr and self.segment_length is not None:
            raise ValueError("segment_length has no effect without the reorganisation (rfr: false)")
        if self.segment_length is not None and self.segment_length < 1:
            raise ValueError(f"DeReF option segment_length={self.segment_length}; it must be at least 1")
        if not self.moe and self.n_experts != 4:
            raise ValueError("n_experts has no effect without the MoE (moe: false)")

    @property
    def n_features(self) -> int:
        """How many features the fusion reorganises: the decoupled ones, or the two class tokens."""
        if not self.decouple:
            return 2
        return 4 if self.explore else 3


# What an experiment variant may set (model.variants); test_rfr is the training setting of that name.
ARCHITECTURE_OPTIONS = tuple(f.name for f in fields(DeReFOptions) if f.name != "test_rfr")
