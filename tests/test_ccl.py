"""CCL: outputs, k-means and memory, the patient bank and cohort loss by hand, training, the authors' code."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from model.ccl import CCL, cohort_loss, lloyd_kmeans
from model.survival import nll_survival_loss, risk_score, survival_curve
from model.train import TrainSettings
from tests.authors_code import authors_module, renamed
from tests.tiny_cohort import BLCA, SMALL, WSI_DIM, assert_seeded_and_deterministic, planted_cohort, train_briefly


def clustered_bag(n: int, dim: int, generator: torch.Generator, batch: int = 1, blobs: int = 6) -> torch.Tensor:
    """Patches around a few random centres, non-negative like CNN features: k-means has work to do."""
    centres = 3 * torch.rand(batch, blobs, dim, generator=generator)
    which = torch.randint(blobs, (batch, n), generator=generator)
    noise = 0.5 * torch.rand(batch, n, dim, generator=generator)
    return torch.gather(centres, 1, which.unsqueeze(-1).expand(-1, -1, dim)) + noise


def inputs(modality: str = "genomics", n: int = 40, batch: int = 1, sizes=SMALL, wsi_dim=WSI_DIM, seed=0):
    g = torch.Generator().manual_seed(seed)
    wsi = clustered_bag(n, wsi_dim, g, batch)
    if modality == "mri":
        return wsi, [torch.randn(batch, 2, 16, 32, 32, generator=g)]
    return wsi, [torch.randn(batch, d, generator=g) for d in sizes]


def small(modality: str = "genomics", **kwargs) -> CCL:
    second = {"mri_channels": 2, "mri_depth": 10} if modality == "mri" else {"omic_sizes": SMALL}
    return CCL(WSI_DIM, dim=16, **second, **kwargs)


def no_dropout(model: nn.Module) -> nn.Module:
    """Training mode (memory and bank updates) with every dropout off, to compare numbers."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


@pytest.mark.parametrize("modality", ["genomics", "mri"])
def test_output_shapes_and_attention(modality):
    torch.manual_seed(0)
    model = small(modality).eval()
    with torch.no_grad():
        out = model(*inputs(modality, n=30, batch=2))
    assert out["hazards"].shape == (2, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert out["components"].shape == (2, 4, 16) and out["individual"].shape == (2, 2, 16)
    assert out["attention"].shape == (2, 30) and (out["attention"] >= 0).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(2))
    assert set(out) == {"hazards", "survival", "risk", "attention", "components", "individual"}


def test_attention_is_the_slot_weight_shared_by_a_cluster():
    torch.manual_seed(0)
    model = small().eval()
    wsi, second = inputs(n=50)
    with torch.no_grad():
        attention = model(wsi, second)["attention"][0]
    assignment, _ = lloyd_kmeans(wsi[0], model.memory)
    for k in assignment.unique():  # one weight per cluster, shared equally by its patches
        members = attention[assignment == k]
        assert torch.allclose(members, members[0].expand_as(members))


def test_patch_weight_is_the_slot_weight_over_the_cluster_size_by_hand():
    model = small()  # 6 clusters
    with torch.no_grad():
        model.wsi_merge.conv.weight.copy_(torch.tensor([2.0, -1.0, 3.0, 0.5, 4.0, 1.0]).view(1, 6, 1))
    assignment = torch.tensor([0, 0, 1, 2, 2, 2])  # clusters of 2, 1 and 3 patches
    slots = torch.tensor([4, 1, 0, 2, 3, 5])  # centre k sits in memory slot slots[k]
    # |w| of slots 4, 1, 0 = 4, 1, 2; per patch 4/2, 4/2, 1/1, 2/3, 2/3, 2/3; total 7
    expected = torch.tensor([2.0, 2.0, 1.0, 2 / 3, 2 / 3, 2 / 3]) / 7
    assert torch.allclose(model._patch_weights(assignment, slots), expected)


def test_one_patch_bags_and_fewer_patches_than_clusters():
    torch.manual_seed(0)
    model = small().eval()
    for n in (1, 3):
        with torch.no_grad():
            out = model(*inputs(n=n))
        assert torch.isfinite(out["hazards"]).all() and torch.allclose(out["attention"].sum(), torch.tensor(1.0))


def test_demo_sizes_forward_backward_reach_every_parameter():
    torch.manual_seed(0)
    model = CCL(1024, omic_sizes=BLCA).train()
    wsi, second = inputs(n=50, sizes=BLCA, wsi_dim=1024)
    out = model(wsi, second)
    bins, censorship = torch.tensor([2]), torch.tensor([0])
    loss = nll_survival_loss(out["hazards"], bins, censorship) + model.auxiliary_loss(
        out, TrainSettings(), bins, censorship
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.genomic_weights() and all(w.ndim == 2 for w in model.genomic_weights())


def test_same_seed_same_model_and_eval_is_deterministic():
    assert_seeded_and_deterministic(small, *inputs(), ("hazards",))


def test_memory_moves_only_in_training_and_is_saved_the_bank_is_not():
    torch.manual_seed(0)
    model = small()
    assert "memory" in model.state_dict() and "bank" not in model.state_dict()
    wsi, second = inputs()
    before = model.memory.clone()
    with torch.no_grad():
        model.eval()(wsi, second)
    assert torch.equal(model.memory, before)
    _, found = lloyd_kmeans(wsi[0], before)
    model.train()(wsi, second)
    # the centres, in memory-slot order, are a permutation of the k-means centres, and the memory moved 10% to them
    moved = (model.memory - 0.9 * before) / 0.1
    assert torch.allclose(moved.sort(dim=0).values, found.sort(dim=0).values, atol=1e-4)
    assert model.auxiliary_loss(model.eval()(wsi, second), TrainSettings(), torch.tensor([1]), torch.tensor([0])) == 0
    assert model.bank_size.sum() == 0


def test_bank_keeps_the_last_patients_of_each_bin():
    torch.manual_seed(0)
    model = small(bank_length=2).train()
    seen = []
    for i in range(3):
        out = model(*inputs(seed=i))
        model.auxiliary_loss(out, TrainSettings(), torch.tensor([1]), torch.tensor([0]))
        seen.append(out["components"][0].detach())
    assert model.bank_size.tolist() == [0, 2, 0, 0]
    assert torch.equal(model.bank[1], torch.stack(seen[1:]))


def test_reference_switch_feeds_the_specific_blocks_the_other_modality():
    torch.manual_seed(0)
    reference = small().eval()
    paper = small(reference=False).eval()
    paper.load_state_dict(reference.state_dict())
    wsi, second = inputs()
    with torch.no_grad():
        out_ref, out_paper = reference(wsi, second), paper(wsi, second)
        genomic, pathology = out_ref["individual"][:, :1], out_ref["individual"][:, 1:]
        blocks = reference.decomposition
        assert torch.allclose(out_ref["components"][:, 2:3], blocks.genomic_specific(pathology))
        assert torch.allclose(out_ref["components"][:, 3:4], blocks.wsi_specific(genomic))
        assert torch.allclose(out_paper["components"][:, 2:3], blocks.genomic_specific(genomic))
        assert torch.allclose(out_paper["components"][:, 3:4], blocks.wsi_specific(pathology))
    assert not torch.allclose(out_ref["hazards"], out_paper["hazards"])


def test_nystrom_padding_switch_changes_the_fusion():
    torch.manual_seed(0)
    padded = small().eval()
    exact = small(nystrom_padding=False).eval()
    exact.load_state_dict(padded.state_dict())
    with torch.no_grad():
        assert not torch.allclose(padded(*inputs())["hazards"], exact(*inputs())["hazards"])


def _cohort_by_hand(components, individual, positives, negatives, temperature=2.0):
    """numpy: cosine table, the alignment targets, and the element-wise exp means."""

    def cos(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    targets = np.array([[1, 1], [0, 0], [1, 0], [0, 1]], dtype=float)
    s = np.array([[cos(c, t) for t in individual] for c in components])
    knowledge = np.mean(np.abs(s) * (1 - targets) - targets * s) + 1
    if positives is None:
        return knowledge
    p = np.mean([np.exp(components * entry / temperature) for entry in positives])
    q = np.mean([np.exp(components * entry / temperature) for entry in negatives])
    return knowledge - np.log(p / (p + q + 1e-10))


def test_cohort_loss_by_hand():
    rng = np.random.default_rng(0)
    components, individual = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    banks = [rng.standard_normal((m, 4, 3)) for m in (2, 3, 1, 2)]  # the patient is the last entry of its bin

    def ours(label, censored):
        bank = [torch.tensor(b) for b in banks]
        bank[label] = torch.cat([bank[label][:-1], torch.tensor(components)[None]])
        return float(cohort_loss(torch.tensor(components), torch.tensor(individual), bank, label, censored))

    # uncensored in bin 1: its bin's earlier two entries against bins 0, 2, 3
    expected = _cohort_by_hand(components, individual, list(banks[1][:-1]), [*banks[0], *banks[2], *banks[3]])
    assert ours(1, False) == pytest.approx(expected, rel=1e-9)
    # censored in bin 2: bins 2 and 3 (itself included) against bins 0 and 1
    positives = [components, *banks[3]]
    assert ours(2, True) == pytest.approx(
        _cohort_by_hand(components, individual, positives, [*banks[0], *banks[1]]), rel=1e-9
    )
    # censored in bin 0, and uncensored alone in its bin: the knowledge term only
    assert ours(0, True) == pytest.approx(_cohort_by_hand(components, individual, None, None), rel=1e-9)
    assert ours(2, False) == pytest.approx(_cohort_by_hand(components, individual, None, None), rel=1e-9)
    # the knowledge term by hand: a component equal to a token has cosine 1, one orthogonal to both 0
    e = np.eye(3)
    knowledge = cohort_loss(torch.tensor(np.stack([e[0], e[2], e[0], e[1]])), torch.tensor(e[:2]), [], 0, True)
    assert float(knowledge) == pytest.approx(1 + (-1 + 0 + 0 + 0 - 1 + 0 + 0 - 1) / 8)


def test_auxiliary_loss_is_the_cohort_loss_after_appending():
    torch.manual_seed(0)
    model = small(cohort_weight=0.5).train()
    previous = model(*inputs(seed=1))
    model.auxiliary_loss(previous, TrainSettings(), torch.tensor([0]), torch.tensor([0]))
    out = model(*inputs(seed=2))
    loss = model.auxiliary_loss(out, TrainSettings(), torch.tensor([1]), torch.tensor([1]))
    # censored in bin 1: bins 1-3 (itself) are the positives, bin 0 (the previous patient) the negatives
    empty = torch.zeros(0, 4, 16)
    banks = [previous["components"][0].detach()[None], out["components"][0].detach()[None], empty, empty]
    expected = cohort_loss(out["components"][0], out["individual"][0], banks, 1, True)
    knowledge_only = cohort_loss(out["components"][0], out["individual"][0], banks, 0, True)
    assert torch.allclose(loss, 0.5 * expected) and not torch.allclose(expected, knowledge_only)


def test_trains_through_the_real_loop():
    g = torch.Generator().manual_seed(0)
    patients = [replace(p, bag=clustered_bag(len(p.bag), WSI_DIM, g)[0]) for p in planted_cohort(10)]
    result, _, _ = train_briefly(small, patients, 7)
    assert "memory" in result.state_dict


# --- the authors' code -------------------------------------------------------------------------------------------

RENAMES = [
    (r"^genomics_fc\.(\d+)\.0\.", r"second_tokens.nets.\1."),
    (r"^geno_fc\.", "second_fc."),
    (r"^geno_conv\.0\.", "second_merge.conv."),
    (r"^path_fc\.", "wsi_fc."),
    (r"^path_conv\.0\.", "wsi_merge.conv."),
    (r"^know_decompose\.geno_spec\.conv\.", "decomposition.genomic_specific."),
    (r"^know_decompose\.path_spec\.conv\.", "decomposition.wsi_specific."),
    (r"^know_decompose\.common_encoder\.", "decomposition.common."),
    (r"^know_decompose\.synergy_encoder\.", "decomposition.synergy."),
    (r"\.geno_fc\.", ".genomic_proj."),
    (r"\.path_fc\.", ".wsi_proj."),
    (r"\.geno_atten\.", ".genomic_gate."),
    (r"\.path_atten\.", ".wsi_gate."),
    (r"^transformer\.", "fusion."),
    (r"\.attn\.res_conv\.", ".attention.residual."),
    (r"\.attn\.", ".attention."),
    (r"^classifier\.", "head."),
]


def ours_from_theirs(theirs: nn.Module) -> dict[str, torch.Tensor]:
    """Their state_dict under our names (their unused PPEG dropped), plus their memory, kept outside it."""
    mapped = {
        renamed(key, RENAMES): value
        for key, value in theirs.state_dict().items()
        if not key.startswith("transformer.pos_layer.")
    }
    return mapped | {"memory": theirs.path_know_memory[0]}


@pytest.fixture
def authors(monkeypatch):
    """Their network and loss modules on the CPU: ``.cuda()`` is a no-op (a Parameter's returns its
    data, a plain tensor, as on a GPU, so their memory and bank stay unregistered) and their
    k-means gets the CPU device."""
    network = authors_module("CCL", "models.CCL.network", packages=["einops", "timm"])
    losses = authors_module("CCL", "utils.loss_factory")
    monkeypatch.setattr(
        torch.Tensor, "cuda", lambda self, *a, **k: self.data if isinstance(self, nn.Parameter) else self
    )
    kmeans = network.kmeans
    monkeypatch.setattr(network, "kmeans", lambda **kw: kmeans(**{**kw, "device": torch.device("cpu")}))
    return SimpleNamespace(network=network, losses=losses, kmeans=kmeans)


def build_pair(authors, bank_length: int = 10) -> tuple[nn.Module, CCL]:
    args = SimpleNamespace(
        seed=0,
        n_classes=4,
        num_cluster=6,
        bank_length=bank_length,
        update_ratio=0.1,
        extractor="resnet50",
        dataset="blca",
    )
    torch.manual_seed(0)
    theirs = authors.network.CCL(args)
    ours = CCL(1024, omic_sizes=BLCA, bank_length=bank_length)
    ours.load_state_dict(ours_from_theirs(theirs))
    return theirs, ours


@pytest.mark.authors_code
@pytest.mark.parametrize("case", ["clustered", "gaussian", "few_points", "one_start"])
def test_kmeans_matches_kmeans_pytorch(authors, case):
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(6, 64, generator=g)
    points = {
        "clustered": clustered_bag(120, 64, g)[0],
        "gaussian": torch.randn(300, 64, generator=g),
        "few_points": torch.randn(3, 64, generator=g),  # six centres on three points: empty clusters
        "one_start": clustered_bag(80, 64, g)[0],
    }[case]
    if case == "one_start":  # every memory centre starts at the same (smallest) patch, as CNN features against N(0, 1)
        memory = 0.01 * memory
    their_ids, their_centres = authors.kmeans(
        X=points, num_clusters=6, cluster_centers=memory[None], distance="euclidean", tqdm_flag=False
    )
    ids, centres = lloyd_kmeans(points, memory)
    assert torch.equal(ids, their_ids)
    assert torch.allclose(centres, their_centres, atol=1e-5)


@pytest.mark.authors_code
def test_matches_the_authors_model_in_evaluation(authors):
    """Eval mode, their ``phase='eval'``: the memory stays, no dropout; the same weights and memory."""
    theirs, ours = build_pair(authors)
    ppeg = sum(p.numel() for p in theirs.transformer.pos_layer.parameters())
    theirs_count = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    ours_count = sum(p.numel() for p in ours.parameters())
    print(f"CCL parameters: authors {theirs_count:,} (unused PPEG {ppeg:,}), ours {ours_count:,}")
    assert ppeg == 22_016 and ours_count == theirs_count - ppeg
    theirs.eval(), ours.eval()
    worst = 0.0
    for seed, n in enumerate((60, 200, 7)):
        wsi, families = inputs(n=n, sizes=BLCA, wsi_dim=1024, seed=seed)
        with torch.no_grad():
            expected = theirs(x_path=wsi, x_omic=torch.cat(families, dim=1), phase="eval")["hazards"][0]
            got = ours(wsi, families)["hazards"]
        worst = max(worst, (expected - got).abs().max().item())
    print(f"CCL max |hazards difference| (eval): {worst:.2e}")
    assert worst <= 1e-5


@pytest.mark.authors_code
def test_matches_the_authors_training_phase_memory_bank_and_cohort_loss(authors):
    """Their ``phase='train'`` with dropout off against our training mode with dropout off: hazards,
    the memory after each patient, and the cohort loss with a bank of 2 (so it also drops patients)."""
    theirs, ours = build_pair(authors, bank_length=2)
    theirs.eval(), no_dropout(ours)
    cohort = authors.losses.CohortLoss()
    labels = [(1, 0), (1, 0), (2, 1), (0, 1), (3, 0), (1, 0), (1, 0), (2, 0), (3, 1)]  # (bin, censored)
    worst = {"hazards": 0.0, "memory": 0.0, "cohort": 0.0}
    for seed, (label, censored) in enumerate(labels):
        wsi, families = inputs(n=50, sizes=BLCA, wsi_dim=1024, seed=seed)
        bin_, c = torch.tensor([float(label)]), torch.tensor([float(censored)])
        out = theirs(x_path=wsi, x_omic=torch.cat(families, dim=1), phase="train", label=bin_, c=c)
        expected = cohort(out, {"label": bin_, "c": c})
        mine = ours(wsi, families)
        got = ours.auxiliary_loss(mine, TrainSettings(), torch.tensor([label]), torch.tensor([censored]))
        worst["hazards"] = max(worst["hazards"], (out["hazards"][0] - mine["hazards"]).abs().max().item())
        worst["memory"] = max(worst["memory"], (theirs.path_know_memory[0] - ours.memory).abs().max().item())
        worst["cohort"] = max(worst["cohort"], abs(float(expected) - float(got)))
    print(f"CCL max differences over {len(labels)} training-phase patients: {worst}")
    assert ours.bank_size.tolist() == [len(b) for b in theirs.patient_bank] == [1, 2, 2, 2]
    assert all(v <= 1e-5 for v in worst.values())
