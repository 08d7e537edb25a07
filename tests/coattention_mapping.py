"""The authors' MCAT and MOTCat networks against ours, for the fidelity tests of both.

MOTCat's code is MCAT's with optimal transport in place of the co-attention, and
``model.motcat.MOTCat`` mirrors ``model.mcat.MCAT`` likewise: one key mapping, one way of calling
their networks and one comparison serve tests/test_mcat.py and tests/test_motcat.py.
"""

from __future__ import annotations

import torch

from tests.tiny_cohort import BLCA, random_inputs

# the authors' module names -> ours (MOTCat has the same names without the co-attention's)
AUTHORS_PREFIXES = {
    "wsi_net.": "wsi_fc.",
    "sig_networks.": "second_encoder.nets.",
    "coattn.": "co_attention.attention.",
    "path_transformer.": "path_pool.transformer.",
    "path_attention_head.": "path_pool.gate.",
    "path_rho.": "path_pool.rho.",
    "omic_transformer.": "second_pool.transformer.",
    "omic_attention_head.": "second_pool.gate.",
    "omic_rho.": "second_pool.rho.",
    "mm.": "fusion.",
    "classifier.": "head.",
}


def ours_from_theirs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' ``MCAT_Surv`` / ``MOTCAT_Surv`` state dict under our module names."""
    mapped = {}
    for key, value in state.items():
        prefix = next(p for p in AUTHORS_PREFIXES if key.startswith(p))
        mapped[AUTHORS_PREFIXES[prefix] + key[len(prefix) :]] = value
    return mapped


def authors_outputs(
    theirs: torch.nn.Module, wsi: torch.Tensor, second: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Their hazards and co-attention (T, N) for one patient, called as their loader does.

    x_path is (N, 1024) and each family an unbatched (d_i,) vector; the co-attention comes back
    as (1, 1, T, N): MCAT's pre-softmax scores, MOTCat's transposed transport plan.
    """
    omics = {f"x_omic{i + 1}": x[0] for i, x in enumerate(second)}
    with torch.no_grad():
        hazards, _, _, scores = theirs(x_path=wsi[0], **omics)
    return hazards, scores["coattn"][0, 0]


def compared_with_theirs(
    name: str, theirs: torch.nn.Module, ours: torch.nn.Module, n_patches: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Their weights loaded into ours, both run on one random BLCA patient of ``n_patches`` patches.

    Checks that the parameter counts are equal and the hazards agree to 1e-5; returns our outputs
    and their co-attention (T, N), for the caller to compare with our patch attention.
    """
    counts = [sum(p.numel() for p in m.parameters()) for m in (theirs, ours)]
    print(f"{name} parameters (BLCA families): authors {counts[0]}, ours {counts[1]}")
    assert counts[0] == counts[1], counts
    ours.load_state_dict(ours_from_theirs(theirs.state_dict()))
    wsi, second = random_inputs("genomics", n_patches, wsi_dim=1024, sizes=BLCA, seed=n_patches)
    with torch.no_grad():
        out = ours(wsi, second)
    hazards, co_attention = authors_outputs(theirs, wsi, second)
    difference = (hazards - out["hazards"]).abs().max().item()
    print(f"{name} max |hazards difference| with {n_patches} patches: {difference:.2e}")
    assert difference <= 1e-5, difference
    return out, co_attention
