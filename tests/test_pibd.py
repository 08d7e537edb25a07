"""PIBD: outputs for genomics and MRI, gradients, seeding, eval noise, a training run, the losses by hand, the authors' code."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from model.pibd import (
    PIBD,
    NoiseSource,
    club_bound,
    club_fit_loss,
    kl_to_standard_normal,
    prototype_contrast,
    prototype_survival_loss,
)
from model.survival import nll_survival_loss, risk_score, survival_curve
from model.train import TrainSettings
from tests.authors_code import authors_module, renamed
from tests.tiny_cohort import BLCA, SMALL, WSI_DIM, planted_cohort, train_briefly

TRAINING_KEYS = {
    "candidate_logits",
    "histology",
    "pathways",
    "common",
    "wsi_scores",
    "second_scores",
    "wsi_prototype_logits",
    "second_prototype_logits",
}


def genomic_inputs(
    sizes: list[int], n_patches: int, wsi_dim: int = WSI_DIM, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_patches, wsi_dim, generator=g), [torch.randn(batch, d, generator=g) for d in sizes]


def small_model(**kwargs) -> PIBD:
    torch.manual_seed(0)
    return PIBD(WSI_DIM, omic_sizes=SMALL, dim=16, **kwargs)


def check_outputs(out: dict[str, torch.Tensor], batch: int, n_patches: int) -> None:
    assert out["hazards"].shape == (batch, 4) and ((out["hazards"] > 0) & (out["hazards"] < 1)).all()
    assert torch.equal(out["survival"], survival_curve(out["hazards"]))
    assert torch.equal(out["risk"], risk_score(out["hazards"]))
    assert out["attention"].shape == (batch, n_patches) and (out["attention"] >= 0).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(batch))


@pytest.mark.parametrize("n_patches", [1, 7, 50, 600])
def test_genomic_outputs_and_attention_sum_to_one(n_patches):
    model = small_model()
    with torch.no_grad():
        out = model.eval()(*genomic_inputs(SMALL, n_patches, batch=2))
        check_outputs(out, batch=2, n_patches=n_patches)
        assert set(out) == {"hazards", "survival", "risk", "attention"}  # eval: nothing else goes to details.h5
        trained = model.train()(*genomic_inputs(SMALL, n_patches, batch=2))
    check_outputs(trained, batch=2, n_patches=n_patches)
    rounds, prototypes = 8, 8
    shapes = {
        "candidate_logits": (2, prototypes, 4),
        "histology": (2, rounds, 16),
        "pathways": (2, rounds, 16),
        "common": (2, rounds, prototypes, 16),
        "wsi_scores": (2, rounds, prototypes),
        "second_scores": (2, prototypes),
        "wsi_prototype_logits": (rounds, prototypes, 4),
        "second_prototype_logits": (prototypes, 4),
    }
    assert {key: tuple(trained[key].shape) for key in TRAINING_KEYS} == shapes


def test_mri_outputs_with_volume_tokens():
    torch.manual_seed(0)
    model = PIBD(WSI_DIM, mri_channels=2, mri_depth=10, dim=32).eval()
    volume = [torch.randn(1, 2, 16, 32, 32)]
    with torch.no_grad():
        out = model(torch.randn(1, 7, WSI_DIM), volume)
        tokens = model.second_tokens(volume)
    check_outputs(out, batch=1, n_patches=7)
    assert tokens.shape[0] == 1 and tokens.shape[2] == 32  # (B, T, dim) in place of the six family tokens
    with pytest.raises(ValueError, match="exactly one of omic_sizes"):
        PIBD(WSI_DIM, omic_sizes=SMALL, mri_channels=2)


def test_demo_size_step_gives_every_parameter_a_finite_gradient():
    torch.manual_seed(0)
    model = PIBD(1024, omic_sizes=BLCA).train()
    out = model(*genomic_inputs(BLCA, 50, wsi_dim=1024))
    bins, censorship = torch.tensor([1]), torch.tensor([0])
    loss = nll_survival_loss(out["hazards"], bins, censorship) + model.auxiliary_loss(
        out, TrainSettings(), bins, censorship
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_same_seed_same_outputs_and_eval_is_deterministic():
    inputs = genomic_inputs(SMALL, 700)  # more than 512 patches: the eval subsets are drawn
    outs = []
    for _ in range(2):
        model = small_model().eval()
        with torch.no_grad():
            outs += [model(*inputs) for _ in range(2)]
    for key in ("hazards", "attention"):
        assert all(torch.equal(outs[0][key], out[key]) for out in outs[1:]), key


def test_eval_leaves_the_global_generator_alone_and_its_seed_picks_the_subsets():
    inputs = genomic_inputs(SMALL, 700)
    model = small_model().eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        first = model(*inputs)["hazards"]
        assert torch.equal(torch.get_rng_state(), state)
        model.eval_seed = 2
        other = model(*inputs)["hazards"]
    assert not torch.equal(first, other)


def test_a_bag_within_one_subset_is_seen_whole():
    # Up to 512 patches every subset is the whole bag (in another order), so patch order cannot matter.
    wsi, second = genomic_inputs(SMALL, 300)
    model = small_model().eval()
    with torch.no_grad():
        out = model(wsi, second)
        shuffled = model(wsi[:, torch.randperm(300)], second)
    assert torch.allclose(out["hazards"], shuffled["hazards"], atol=1e-6)


def test_noise_source_replays_the_authors_reseeding():
    # The authors' eval: torch.normal(..., generator=torch.manual_seed(seed)) reseeds the global
    # generator, and the next randperm continues from it.
    theirs_noise = torch.normal(torch.zeros(8, 5, 3), torch.ones(8, 5, 3), generator=torch.manual_seed(1))
    theirs_rows = torch.randperm(700)[:512]
    noise = NoiseSource(1)
    assert torch.equal(noise.normal(8, 5, 3), theirs_noise)
    assert torch.equal(noise.subset(700, 512), theirs_rows)
    assert NoiseSource(None).subset(10, 512).sort().values.tolist() == list(range(10))


def test_prototype_contrast_by_hand():
    # Patient 1, label prototype 0: others' mean (0.1 + 0.2 + 0.3) / 3 = 0.2, minus 0.5 -> -0.3.
    # Patient 2, label prototype 2: others' mean (0 + 0.4 + 0.1) / 3 = 1/6, minus 0.4 -> -7/30. Mean -0.2667.
    scores = torch.tensor([[0.5, 0.1, 0.2, 0.3], [0.0, 0.4, 0.4, 0.1]])
    index = torch.tensor([0, 2])
    assert prototype_contrast(scores, index).item() == pytest.approx((-0.3 - 7 / 30) / 2)
    # with a subset dimension (B, R, P): each subset uses the patient's label; the mean runs over both
    rounds = torch.stack([scores, scores.flip(-1)], dim=1)  # flipped: patient 1 0.3 vs 0.2667, patient 2 0.2 vs 0.3
    flipped = ((0.1 + 0.2 + 0.5) / 3 - 0.3 + (0.1 + 0.4 + 0.0) / 3 - 0.4) / 2
    assert prototype_contrast(rounds, index).item() == pytest.approx(((-0.3 - 7 / 30) / 2 + flipped) / 2)


def test_prototype_survival_loss_by_hand():
    # Two bins, logits 0 -> hazards 0.5, survival (0.5, 0.25); prototypes (bin, censorship):
    # (0, 0): -log h0 = log 2; (1, 0): -log S0 - log h1 = 2 log 2 (uncensored terms weigh 1 at any alpha);
    # (0, 1): 0.5 * -log S0 = 0.5 log 2; (1, 1): 0.5 * -log S1 = log 2. Sum 4.5 log 2.
    logits = torch.zeros(4, 2)
    assert prototype_survival_loss(logits).item() == pytest.approx(4.5 * np.log(2))
    # leading subset dimension averaged: a second subset with hazard h = sigmoid(2) in bin 0, 0.5 in bin 1
    confident = torch.tensor([[2.0, 0.0]]).expand(4, 2)
    h = 1 / (1 + np.exp(-2.0))
    second = -np.log(h) + (-np.log(1 - h) - np.log(0.5)) + 0.5 * -np.log(1 - h) + 0.5 * -np.log((1 - h) * 0.5)
    assert prototype_survival_loss(torch.stack([logits, confident])).item() == pytest.approx(
        (4.5 * np.log(2) + second) / 2, rel=1e-5
    )


def test_kl_to_standard_normal_by_hand():
    # Row 1: N(0, I) itself -> 0. Row 2: 0.5 (4 + 0.25 + 1 + 4 - 2 - log(4 * 0.25)) = 3.625. Mean 1.8125.
    mean = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    scale = torch.tensor([[1.0, 1.0], [2.0, 0.5]])
    assert kl_to_standard_normal(mean, scale).item() == pytest.approx(1.8125)


def test_club_terms_by_hand():
    # d = 1, mu = (1, 3), y = (2, 0). Positive: -(1 - 2)²/2 = -0.5, -(3 - 0)²/2 = -4.5.
    # Negative: -mean_j (y_j - mu_i)²/2 = -(1 + 1)/4 = -0.5 and -(1 + 9)/4 = -2.5. Bound mean(0, -2) = -1.
    # Fit: mean((1 - 2)², (3 - 0)²) = 5.
    prediction, target = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [0.0]])
    assert club_bound(prediction, target).item() == pytest.approx(-1.0)
    assert club_fit_loss(prediction, target).item() == pytest.approx(5.0)
    assert club_bound(prediction[:1], target[:1]).item() == 0.0  # one patient: the bound vanishes
    rounds = torch.stack([prediction, prediction.flip(0)]), torch.stack([target, target.flip(0)])
    assert club_bound(*rounds).item() == pytest.approx(-1.0)  # per-subset batches (R, B, d), averaged


def numpy_nll(hazards: np.ndarray, bins: np.ndarray, censorship: np.ndarray, alpha: float) -> float:
    """The censored discrete-time NLL, written out: uncensored -log S(y-1) - log h(y), censored -log S(y)."""
    survival = np.cumprod(1 - hazards, axis=1)
    padded = np.concatenate([np.ones((len(bins), 1)), survival], axis=1)
    rows = np.arange(len(bins))
    uncensored = -(1 - censorship) * (np.log(padded[rows, bins]) + np.log(hazards[rows, bins]))
    censored = -censorship * np.log(padded[rows, bins + 1])
    return float(((1 - alpha) * (censored + uncensored) + alpha * uncensored).mean())


def test_auxiliary_loss_by_hand():
    # Two bins, dim 4, two patients (bin 1 uncensored: prototype 1; bin 0 censored: prototype 2), two subsets.
    torch.manual_seed(0)
    model = PIBD(WSI_DIM, n_bins=2, omic_sizes=SMALL, dim=4, ib_weight=0.3, kl_weight=0.2, mi_weight=0.5)
    model.contrast_weight, model.batch_divisor = 2.0, 4
    with torch.no_grad():
        model.wsi_bottleneck.prototypes.copy_(torch.arange(32.0).view(4, 8) / 20 - 0.5)
        model.second_bottleneck.prototypes.copy_(torch.ones(4, 8) * 0.3)
    # CLUB networks made plain: the specific one the identity, the common one the mean of its two halves
    model.club_specific.mean = nn.Identity()
    model.club_common.mean = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        model.club_common.mean.weight.copy_(torch.cat([torch.eye(4), torch.eye(4)], dim=1) / 2)
    rng = np.random.default_rng(0)
    arrays = {
        "candidate_logits": rng.normal(size=(2, 4, 2)),
        "histology": rng.normal(size=(2, 2, 4)),
        "pathways": rng.normal(size=(2, 2, 4)),
        "common": rng.normal(size=(2, 2, 4, 4)),
        "wsi_scores": rng.uniform(size=(2, 2, 4)),
        "second_scores": rng.uniform(size=(2, 4)),
        "wsi_prototype_logits": rng.normal(size=(2, 4, 2)),
        "second_prototype_logits": rng.normal(size=(4, 2)),
    }
    hazards = 1 / (1 + np.exp(-rng.normal(size=(2, 2))))
    out = {key: torch.tensor(value, dtype=torch.float32) for key, value in arrays.items()}
    out["hazards"] = torch.tensor(hazards, dtype=torch.float32)
    bins, censorship = np.array([1, 0]), np.array([0, 1])
    index = censorship * 2 + bins  # prototypes 1 and 2
    settings = TrainSettings(nll_alpha=0.25)

    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    labelled = sigmoid(arrays["candidate_logits"][[0, 1], index])
    survival = numpy_nll(labelled, bins, censorship, 0.25) - numpy_nll(hazards, bins, censorship, 0.25)

    def contrast(scores):  # scores (B, ..., 4)
        values = []
        for b, k in enumerate(index):
            s = scores[b].reshape(-1, 4)
            values += list(np.delete(s, k, axis=1).mean(axis=1) - s[:, k])
        return np.mean(values)

    def prototype_nll(logits):  # (4, 2) -> sum over the prototypes (bin p % 2, censorship p // 2), alpha 0.5
        p = np.arange(4)
        return 4 * numpy_nll(sigmoid(logits), p % 2, p // 2, 0.5)

    def kl(prototypes):
        mean, scale = prototypes[:, :4], np.log1p(np.exp(prototypes[:, 4:]))
        return np.mean(0.5 * ((scale**2).sum(1) + (mean**2).sum(1) - 4 - np.log(scale**2).sum(1)))

    def club(prediction, target):  # one subset's batch (B, d)
        positive = -((prediction - target) ** 2) / 2
        negative = -np.array([((target - m) ** 2).mean(axis=0) for m in prediction]) / 2
        return (positive.sum(1) - negative.sum(1)).mean() + ((prediction - target) ** 2).sum(1).mean()

    ib = 0.3 * (
        np.mean([prototype_nll(x) for x in arrays["wsi_prototype_logits"]])
        + prototype_nll(arrays["second_prototype_logits"])
    ) + 0.2 * (kl(np.arange(32.0).reshape(4, 8) / 20 - 0.5) + kl(np.full((4, 8), 0.3)))
    mi = []
    for r in range(2):
        h, p = arrays["histology"][:, r], arrays["pathways"][:, r]
        g = arrays["common"][[0, 1], r, index]
        mi.append(club(h, p) + club((h + p) / 2, g))
    regularisers = 2.0 * (contrast(arrays["wsi_scores"]) + contrast(arrays["second_scores"])) + ib + 0.5 * np.mean(mi)
    expected = survival + regularisers / 4
    loss = model.auxiliary_loss(out, settings, torch.tensor(bins), torch.tensor(censorship))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_tiny_training_run():
    result, _, _ = train_briefly(small_model, planted_cohort(10, wsi_dim=WSI_DIM), n_train=7)
    assert all(set(details) == {"attention"} for details in result.details.values())


# The authors' names -> ours, applied in order to each state_dict key.
RENAMES = [
    (r"^sig_networks\.", "second_tokens.nets."),
    (r"^PIB_wsi\.", "wsi_bottleneck."),
    (r"^PIB_omics\.", "second_bottleneck."),
    (r"\.proxies$", ".prototypes"),
    (r"\.decoder_logits\.", ".decoder."),
    (r"^PID\.", "disentangle."),
    (r"\.attn\.", ".attention."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
    (r"^to_logits\.", "head."),
    (r"^PoE\.phi$", "joint.logits"),
    (r"^CLUB\.mimin_glob\.p_mu\.", "club_common.mean."),
    (r"^CLUB\.mimin\.p_mu\.", "club_specific.mean."),
]


def ours_from_theirs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {renamed(key, RENAMES): value for key, value in state.items()}


def authors_and_ours(monkeypatch) -> tuple[nn.Module, PIBD]:
    """Their PIBD with the BLCA families as MCAT's "groups" tokens, and ours with their weights."""
    network = authors_module("PIBD", "models.model_PIBD")
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # their noise and indices call .cuda()
    args = types.SimpleNamespace(  # utils/process_args.py defaults, with 1024-d patches and the six families
        omic_sizes=BLCA,
        n_classes=4,
        encoding_dim=1024,
        wsi_projection_dim=256,
        omics_format="groups",
        ratio_wsi=0.5,
        ratio_omics=0.8,
        sample_num=50,
        seed=1,
        num_patches=4096,
        alpha=0.1,
        beta=0.01,
        gamma=1,
        sigma=0.1,
    )
    torch.manual_seed(1)
    theirs = network.PIBD(args)
    ours = PIBD(1024, 4, omic_sizes=BLCA)
    counts = [sum(p.numel() for p in m.parameters()) for m in (theirs, ours)]
    print(f"PIBD parameters (BLCA families): authors {counts[0]}, ours {counts[1]}")
    assert counts[0] == counts[1]
    ours.load_state_dict(ours_from_theirs(theirs.state_dict()))
    return theirs, ours


def their_inputs(wsi: torch.Tensor, second: list[torch.Tensor], y=None, c=None) -> dict:
    return {"x_wsi": wsi, **{f"x_omic{i + 1}": x for i, x in enumerate(second)}, "return_attn": False, "y": y, "c": c}


@pytest.mark.authors_code
@pytest.mark.parametrize(("n_patches", "batch"), [(40, 1), (300, 1), (700, 1), (700, 2)])
def test_matches_the_authors_pibd_in_evaluation(monkeypatch, n_patches, batch):
    # 40 and 300 patches: every subset is the whole bag; 700: the eight subsets their eval draws
    theirs, ours = authors_and_ours(monkeypatch)
    wsi, second = genomic_inputs(BLCA, n_patches, wsi_dim=1024, batch=batch, seed=n_patches)
    with torch.no_grad():
        logits = theirs.eval()(**their_inputs(wsi, second))[0]
        out = ours.eval()(wsi, second)
    difference = (torch.sigmoid(logits) - out["hazards"]).abs().max().item()
    print(f"PIBD max |hazards difference| with {n_patches} patches, batch {batch}: {difference:.2e}")
    assert difference <= 1e-5


@pytest.mark.authors_code
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_the_authors_training_loss_and_gradients(monkeypatch, batch):
    # Training mode with every dropout at 0 and the same global seed: the same noise and subsets are drawn
    # in the same order, so their label-driven loss (core_utils.py) and ours (loop NLL + auxiliary_loss,
    # batch_divisor = their batch size) and every gradient agree.
    theirs, ours = authors_and_ours(monkeypatch)
    for module in (*theirs.modules(), *ours.modules()):
        if isinstance(module, nn.Dropout | nn.AlphaDropout):
            module.p = 0.0
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0
    ours.disentangle.dropout, ours.batch_divisor = 0.0, batch
    loss_func = authors_module("PIBD", "utils.loss_func")
    wsi, second = genomic_inputs(BLCA, 600, wsi_dim=1024, batch=batch, seed=batch)
    bins, censorship = torch.tensor([2, 0, 3][:batch]), torch.tensor([0.0, 1.0, 1.0][:batch])
    torch.manual_seed(5)
    logits, ib, proxy, mimin, mimin_fit = theirs.train()(**their_inputs(wsi, second, bins, censorship))
    survival = loss_func.NLLSurvLoss(alpha=0.5)(h=logits, y=bins, t=None, c=censorship)
    their_loss = (survival + 1 * proxy + ib + 0.1 * (mimin + mimin_fit)) / batch
    torch.manual_seed(5)
    out = ours.train()(wsi, second)
    our_loss = nll_survival_loss(out["hazards"], bins, censorship, 0.5) + ours.auxiliary_loss(
        out, TrainSettings(nll_alpha=0.5), bins, censorship
    )
    print(f"PIBD training loss, batch {batch}: authors {their_loss.item():.6f}, ours {our_loss.item():.6f}")
    assert our_loss.item() == pytest.approx(their_loss.item(), rel=1e-5)
    their_loss.backward()
    our_loss.backward()
    their_grads = ours_from_theirs({k: p.grad for k, p in theirs.named_parameters()})
    for name, p in ours.named_parameters():
        scale = their_grads[name].abs().max().item()
        assert (p.grad - their_grads[name]).abs().max().item() <= 1e-4 * max(scale, 1e-6), name
