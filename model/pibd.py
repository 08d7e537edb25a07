"""PIBD (Zhang, Xu, Chen, Xie & Chen, ICLR 2024): prototypical information bottlenecking and disentangling.

Paper (its abstract and third-party summaries; the method section could not be read here): a
Prototypical Information Bottleneck (PIB) per modality models prototypes, one Gaussian per risk
level, that select each bag's discriminative instances (intra-modal redundancy); Prototypical
Information Disentanglement (PID) splits the selected instances into modality-specific and
modality-common knowledge under the guidance of the joint prototypical distribution (inter-modal
redundancy). Nothing read contradicts the code, so there is no ``reference`` switch: this is the code.

The authors' code (zylbuaa/PIBD@bd5bd94, ``models/model_PIBD.py``), followed here:

- Second modality as tokens: each omics group through its own two SNN blocks (Linear-ELU-
  AlphaDropout 0.25) to ``dim``. The authors run ``omics_format="pathways"`` (SurvPath's pathway
  tokens, ``type_of_path="combine"``), and the same ``sig_networks`` serve ``"groups"``, MCAT's six
  gene families; this workflow gives the six families, so six tokens (``GeneFamilyEncoder`` with
  ``hidden=dim``: their modules, key for key). With MRI, ``VolumeTokens`` (the 3D ResNet's
  last-stage grid as T tokens) takes their place (the authors have no MRI branch).
- PIB per modality: tokens -> MLP (in -> 2·dim -> 2·dim -> dim, ReLU, Dropout 0.2); 2·n_bins
  prototypes (time bin x censorship, index c·n_bins + bin), each a Gaussian (mean, softplus
  scale) stored as one xavier-uniform (2·n_bins, 2·dim) parameter; 50 samples of each prototype,
  averaged, are its centre. Cosine similarities of tokens to centres; the top-k (token, prototype)
  pairs pick the tokens passed on (a token can be picked more than once), k = 0.5·512 = 256
  patches and int(0.8·T) second-modality tokens (4 of the six families; at least 1 here). The
  prototype whose distribution guides PID is the label's in training and, at evaluation, the
  most frequent prototype among the top-k pairs, chosen per modality.
- PID: the joint distribution of the two chosen prototypes is a product of experts (precisions
  weighted by a softmax over two learnt logits; the code uses the experts' scales as variances
  and the joint variance as the sampling scale), its 50-sample mean is the common token. One
  pre-norm transformer layer (4 heads, qkv with bias, MLP dim -> dim with GELU, attention/
  projection dropout 0.1, drop path 0.1, all weights shared by the three streams): the patch
  tokens and the second-modality tokens self-attend within their own stream; the common token
  attends over itself and both streams. Token means of the three streams, concatenated,
  -> Linear(3·dim, dim)-ReLU-Linear(dim, n_bins).
- Patches: ``BAG_SIZE = 512``. Every forward (training and evaluation) draws ``n_subsets = 8``
  (``num_patches // BAG_SIZE`` = 4096 // 512) random subsets of min(N, 512) patches, runs PIB and
  PID on each and averages the logits; the second modality is encoded once.
- Randomness: in training, fresh Gaussian noise and subsets from the global generator. In
  evaluation the authors reseed the global generator with ``seed`` (their run seed, 1 by
  default) before every Gaussian draw (``generator=torch.manual_seed(seed)``), so the subsets,
  drawn next from that generator, are fixed: the first from the state after the prototype draw,
  the other seven from the state after the product-of-experts draw, hence identical (their eval
  logits are (l_1 + 7·l_2) / 8, from at most 1,024 distinct patches; a bag of at most 512
  patches is seen whole, and then all eight are equal). Their evaluation bag is the whole bag
  (no 4096-patch sampling). ``NoiseSource`` reproduces this draw for draw with a private
  generator reseeded with ``eval_seed``: eval hazards equal theirs and leave the global generator
  alone.
- Initialisation: PyTorch's defaults throughout (the code has no init function), the prototypes
  xavier-uniform, the expert logits ones.

Losses (``utils/core_utils.py`` and ``PIBD.forward``), per batch of 32 patients:
(Σ NLL_b [alpha_surv 0.5] + gamma·contrast + IB + sigma·(CLUB bound + CLUB fit)) / 32, each term
averaged over the eight subsets. contrast is PIB's "proxy loss" per modality: the mean over the
other prototypes of their mean top-k similarity minus the label's prototype's. IB = alpha·(Σ
over prototypes of the NLL [alpha 0.5] of the decoder's mean logits over the prototype's
samples, labelled with the prototype's own bin and censorship) + beta·(mean KL of the prototypes
to N(0, I)), per modality. The CLUB terms (unit-variance CLUB, Cheng et al. 2020) relate the two
specific token means, and their concatenation to the common token; bound and estimator fit are
summed and minimised together by the one optimiser. alpha, beta, gamma, sigma = 0.1, 0.01, 1, 0.1
(``ib_weight``, ``kl_weight``, ``contrast_weight``, ``mi_weight``). Those terms are batch means
(or per batch) divided by 32 along with the summed NLL, so relative to one patient's NLL each
weighs 1/32 of its nominal weight: ``batch_divisor = 32`` keeps that ratio whatever batch size trains.

The label: ``forward`` does not see it, but in training the authors' common token comes from the
label's prototypes. So in training ``forward`` runs the common stream for every one of the
2·n_bins prototype pairs (only the common token depends on the choice: the patch and
second-modality streams never attend to it) plus the evaluation rule's pair, whose hazards are
``hazards`` (label-free, so the logged training C-index does not see the label), and returns the
per-prototype logits, scores and token means that ``auxiliary_loss`` needs. ``auxiliary_loss``
replaces the loop's NLL on ``hazards`` by the NLL on the label's candidate, then adds the terms
above. What is not the authors' training exactly: (1) one Gaussian draw serves all candidates of a
subset (each candidate is distributed as theirs); (2) training bags are whole bags here, not
4096-patch samples zero-padded to 4096 (a small bag's 512-subsets include zero rows there);
(3) per-patient forwards make the CLUB bound's batch term see one patient, so the bound is 0
(the estimator fit remains); (4) bags too small for k (fewer than 256 patches in training, 32 at
evaluation) clamp k to what exists, where the authors' code would fail. With every dropout off and
the same seed, the training loss and gradients equal theirs (tests/test_pibd.py).

Outputs besides hazards, survival and risk: ``attention`` (B, N), the share of the top-k PIB
selections (over the eight subsets) falling on each patch. In training also the loss inputs:
``candidate_logits`` (B, 2·n_bins, n_bins), ``histology``/``pathways`` (B, 8, dim) and
``common`` (B, 8, 2·n_bins, dim) stream means, ``wsi_scores`` (B, 8, 2·n_bins) and
``second_scores`` (B, 2·n_bins), ``wsi_prototype_logits`` (8, 2·n_bins, n_bins) and
``second_prototype_logits`` (2·n_bins, n_bins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders import GeneFamilyEncoder, VolumeTokens, check_second_modality
from model.survival import SurvivalNetwork, nll_survival_loss, survival_outputs

if TYPE_CHECKING:
    from model.train import TrainSettings

ENCODER_DROPOUT = 0.2  # PIB's MLP
LAYER_DROPOUT = 0.1  # PID's attention, projection, MLP dropout and drop path
HEADS = 4
CLUB_HIDDEN = 512
PROTOTYPE_NLL_ALPHA = 0.5  # the model's own NLLSurvLoss(alpha=0.5) for the prototypes' survival term
PRECISION_EPS = 1e-8


class NoiseSource:
    """Where one forward's Gaussian draws and patch subsets come from, on the CPU as the authors.

    ``seed=None`` (training): the global generator. Otherwise a private generator reseeded with
    ``seed`` before every Gaussian draw, the subsets continuing its stream: the numbers the
    authors' evaluation gets by reseeding the global generator inside every draw.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.generator = None if seed is None else torch.Generator()

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal noise of this shape (the prototypes' and the joint's samples)."""
        if self.generator is None:
            return torch.randn(shape)
        self.generator.manual_seed(self.seed)
        return torch.randn(shape, generator=self.generator)

    def subset(self, n: int, size: int) -> torch.Tensor:
        """min(n, size) distinct rows of n, in random order."""
        return torch.randperm(n, generator=self.generator)[:size]


class BottleneckView(NamedTuple):
    """What PIB passes on from one token set: the picked tokens and the prototype evidence."""

    selected: torch.Tensor  # (B, k, dim) latent tokens of the top-k (token, prototype) pairs
    rows: torch.Tensor  # (B, k) their token indices
    vote: torch.Tensor  # (B,) the most frequent prototype among the top-k pairs (the eval choice)
    scores: torch.Tensor | None  # training: (B, 2·n_bins) mean top-k similarity per prototype
    logits: torch.Tensor | None  # training: (2·n_bins, n_bins) decoder logits, mean over samples


class PrototypicalBottleneck(nn.Module):
    """PIB for one modality: a token MLP, Gaussian prototypes per (censorship, bin), top-k selection."""

    def __init__(self, in_dim: int, dim: int, n_bins: int) -> None:
        super().__init__()
        self.dim = dim
        self.encoder = nn.Sequential(
            nn.Linear(in_dim, 2 * dim),
            nn.ReLU(),
            nn.Dropout(ENCODER_DROPOUT),
            nn.Linear(2 * dim, 2 * dim),
            nn.ReLU(),
            nn.Dropout(ENCODER_DROPOUT),
            nn.Linear(2 * dim, dim),
        )
        self.decoder = nn.Linear(dim, n_bins)
        self.prototypes = nn.Parameter(torch.empty(2 * n_bins, 2 * dim))
        nn.init.xavier_uniform_(self.prototypes)

    def distributions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prototype's mean and (softplus, so positive) scale, (2·n_bins, dim) each."""
        return self.prototypes[:, : self.dim], F.softplus(self.prototypes[:, self.dim :])

    def forward(self, tokens: torch.Tensor, noise: torch.Tensor, keep: int) -> BottleneckView:
        """(B, T, in_dim) tokens and (2·n_bins, samples, dim) noise -> the top-``keep`` view."""
        latent = self.encoder(tokens)
        mean, scale = self.distributions()
        samples = mean.unsqueeze(1) + scale.unsqueeze(1) * noise
        centres = samples.mean(dim=1)
        similarity = F.normalize(latent, dim=2) @ F.normalize(centres, dim=1).T  # (B, T, 2·n_bins)
        n_tokens = latent.shape[1]
        pairs = similarity.transpose(1, 2).flatten(1)  # prototype-major: p·T + t
        top = pairs.topk(min(keep, pairs.shape[1]), dim=1).indices
        rows = top % n_tokens
        selected = latent.gather(1, rows.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))
        vote = (top // n_tokens).mode(dim=1).values
        scores = logits = None
        if self.training:
            scores = similarity.topk(min(keep, n_tokens), dim=1).values.mean(dim=1)
            logits = self.decoder(samples).mean(dim=1)
        return BottleneckView(selected, rows, vote, scores, logits)


class ProductOfExperts(nn.Module):
    """The joint Gaussian of the chosen prototypes, softmax-weighted precisions, as a sample mean."""

    def __init__(self, n_experts: int = 2) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.ones(n_experts))

    def forward(self, means: list[torch.Tensor], scales: list[torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Experts' (B, K, dim) means and scales, (B, samples, dim) noise -> (B, K, dim) joint sample means."""
        weights = torch.softmax(self.logits, dim=0)
        precision = sum(w * (1 / (s + PRECISION_EPS)) for w, s in zip(weights, scales, strict=True))
        weighted = sum(m * w * (1 / (s + PRECISION_EPS)) for m, w, s in zip(means, weights, scales, strict=True))
        mean, spread = weighted / precision, 1 / precision
        return (mean.unsqueeze(2) + spread.unsqueeze(2) * noise.unsqueeze(1)).mean(dim=2)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a sample's whole residual branch with probability p, rescale the rest."""
    if p == 0 or not training:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).add_(1 - p).floor_()
    return x / (1 - p) * keep


class DisentanglingAttention(nn.Module):
    """PID's attention: each specific stream attends within itself, the common tokens over themselves and both."""

    def __init__(self, dim: int, heads: int = HEADS, dropout: float = LAYER_DROPOUT) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_dropout = nn.Dropout(dropout)
        self.projection_dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, dim) -> queries, keys, values (B, heads, L, dim / heads)."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, L, dim / heads) -> projected (B, L, dim)."""
        return self.projection_dropout(self.proj(x.transpose(1, 2).flatten(2)))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attention_dropout(torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)) @ v

    def forward(
        self, histology: torch.Tensor, pathways: torch.Tensor, common: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Streams (B, N, dim), (B, P, dim) and K common tokens (B, K, dim); each common token is its own query.

        Common token k's keys are [itself, the patch tokens, the second-modality tokens], as the
        one common token of a forward in the authors' code; the K candidates never see each other.
        """
        q_h, k_h, v_h = self._split(histology)
        q_p, k_p, v_p = self._split(pathways)
        q_c, k_c, v_c = self._split(common)
        own = (q_c * k_c).sum(dim=-1, keepdim=True) * self.scale
        shared = torch.cat([k_h, k_p], dim=2).transpose(-2, -1)
        weights = torch.softmax(torch.cat([own, q_c @ shared * self.scale], dim=-1), dim=-1)
        weights = self.attention_dropout(weights)
        mixed = weights[..., :1] * v_c + weights[..., 1:] @ torch.cat([v_h, v_p], dim=2)
        return self._merge(self._attend(q_h, k_h, v_h)), self._merge(self._attend(q_p, k_p, v_p)), self._merge(mixed)


class DisentanglingLayer(nn.Module):
    """One pre-norm transformer layer over the three streams, every weight shared between them."""

    def __init__(self, dim: int, dropout: float = LAYER_DROPOUT) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.attention = DisentanglingAttention(dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.Dropout(dropout)
        )

    def forward(self, *streams: torch.Tensor) -> list[torch.Tensor]:
        attended = self.attention(*(self.norm1(s) for s in streams))
        streams = [s + drop_path(a, self.dropout, self.training) for s, a in zip(streams, attended, strict=True)]
        return [s + drop_path(self.mlp(self.norm2(s)), self.dropout, self.training) for s in streams]


class ClubMean(nn.Module):
    """CLUB's network q(y | x) = N(mu(x), I): the mean MLP of the unit-variance estimator."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = CLUB_HIDDEN) -> None:
        super().__init__()
        self.mean = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The MI bound plus the estimator's fit loss, both minimised by the one optimiser as the authors."""
        prediction = self.mean(x)
        return club_bound(prediction, y) + club_fit_loss(prediction, y)


def club_bound(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unit-variance CLUB upper bound over a batch (dim -2): mean_i[log q(y_i|x_i) - mean_j log q(y_j|x_i)].

    With log q = -|y - mu|² / 2 up to a constant. A batch of one gives exactly 0.
    """
    positive = -((prediction - target) ** 2) / 2
    negative = -((target.unsqueeze(-3) - prediction.unsqueeze(-2)) ** 2).mean(dim=-2) / 2
    return (positive.sum(dim=-1) - negative.sum(dim=-1)).mean()


def club_fit_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The estimator's negative log-likelihood (unnormalised): mean over samples of |y - mu(x)|²."""
    return ((prediction - target) ** 2).sum(dim=-1).mean()


def prototype_contrast(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """PIB's proxy loss: mean over samples of [mean_{j != k} s_j - s_k], k the label's prototype.

    ``scores`` (B, ..., P) per-prototype mean top-k similarities, ``index`` (B,) the label's prototype.
    """
    picked = index.view(-1, *([1] * (scores.ndim - 1))).expand(*scores.shape[:-1], 1)
    positive = scores.gather(-1, picked).squeeze(-1)
    negative = (scores.sum(dim=-1) - positive) / (scores.shape[-1] - 1)
    return (negative - positive).mean()


def prototype_survival_loss(logits: torch.Tensor, alpha: float = PROTOTYPE_NLL_ALPHA) -> torch.Tensor:
    """Σ over the 2·n_bins prototypes of the NLL of their logits, prototype c·n_bins + b labelled (bin b, censorship c).

    ``logits`` (..., 2·n_bins, n_bins); leading dims (the subsets) are averaged.
    """
    n_prototypes, n_bins = logits.shape[-2:]
    prototype = torch.arange(n_prototypes, device=logits.device)
    flat = torch.sigmoid(logits.reshape(-1, n_bins))
    repeats = flat.shape[0] // n_prototypes
    bins, censorship = (prototype % n_bins).repeat(repeats), (prototype // n_bins).repeat(repeats)
    return nll_survival_loss(flat, bins, censorship, alpha) * n_prototypes


def kl_to_standard_normal(mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag scale²) || N(0, I)), averaged over the rows (prototypes); log scale clamped at 1e-8."""
    log_det = 2 * torch.log(scale.clamp(min=1e-8)).sum(dim=1)
    return 0.5 * ((scale**2).sum(dim=1) + (mean**2).sum(dim=1) - mean.shape[1] - log_det).mean()


class PIBD(SurvivalNetwork):
    """Prototypical information bottlenecks per modality, disentangling transformer, averaged over patch subsets."""

    def __init__(
        self,
        wsi_dim: int = 1024,
        n_bins: int = 4,
        omic_sizes: list[int] | None = None,
        mri_channels: int | None = None,
        mri_depth: int = 10,
        dim: int = 256,
        dropout: float = 0.25,
        bag_size: int = 512,
        n_subsets: int = 8,
        wsi_ratio: float = 0.5,
        second_ratio: float = 0.8,
        prototype_samples: int = 50,
        eval_seed: int = 1,
        ib_weight: float = 0.1,
        kl_weight: float = 0.01,
        contrast_weight: float = 1.0,
        mi_weight: float = 0.1,
        batch_divisor: int = 32,
    ) -> None:
        super().__init__()
        check_second_modality(omic_sizes, mri_channels)
        self.n_bins, self.dim = n_bins, dim
        self.bag_size, self.n_subsets = bag_size, n_subsets
        self.wsi_keep, self.second_ratio = int(bag_size * wsi_ratio), second_ratio
        self.prototype_samples, self.eval_seed = prototype_samples, eval_seed
        self.ib_weight, self.kl_weight = ib_weight, kl_weight
        self.contrast_weight, self.mi_weight, self.batch_divisor = contrast_weight, mi_weight, batch_divisor
        if omic_sizes is not None:
            self.second_tokens: nn.Module = GeneFamilyEncoder(omic_sizes, dim, hidden=dim, dropout=dropout)
        else:
            self.second_tokens = VolumeTokens(mri_channels, mri_depth, dim)
        self.wsi_bottleneck = PrototypicalBottleneck(wsi_dim, dim, n_bins)
        self.second_bottleneck = PrototypicalBottleneck(dim, dim, n_bins)
        self.disentangle = DisentanglingLayer(dim)
        self.head = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU(), nn.Linear(dim, n_bins))
        self.joint = ProductOfExperts(2)
        self.club_specific = ClubMean(dim, dim)
        self.club_common = ClubMean(2 * dim, dim)

    def forward(self, wsi: torch.Tensor, second: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, N, wsi_dim) bag and the families or [volume] -> hazards, patch attention (and training's loss inputs)."""
        noise = NoiseSource(None if self.training else self.eval_seed)
        n_prototypes = 2 * self.n_bins
        tokens = self.second_tokens(second)
        second_keep = max(1, int(tokens.shape[1] * self.second_ratio))
        second_view = self.second_bottleneck(tokens, self._prototype_noise(noise, wsi), second_keep)
        counts = wsi.new_zeros(wsi.shape[:2])
        rounds = [self._subset_round(wsi, second_view, noise, counts) for _ in range(self.n_subsets)]
        logits = torch.stack([r["logits"] for r in rounds]).mean(dim=0)  # (B, K, n_bins)
        out = survival_outputs(logits[:, -1], attention=counts / counts.sum(dim=-1, keepdim=True))
        if self.training:
            out |= {
                "candidate_logits": logits[:, :n_prototypes],
                "histology": torch.stack([r["histology"] for r in rounds], dim=1),
                "pathways": torch.stack([r["pathways"] for r in rounds], dim=1),
                "common": torch.stack([r["common"][:, :n_prototypes] for r in rounds], dim=1),
                "wsi_scores": torch.stack([r["scores"] for r in rounds], dim=1),
                "second_scores": second_view.scores,
                "wsi_prototype_logits": torch.stack([r["prototype_logits"] for r in rounds]),
                "second_prototype_logits": second_view.logits,
            }
        return out

    def _prototype_noise(self, noise: NoiseSource, like: torch.Tensor) -> torch.Tensor:
        return noise.normal(2 * self.n_bins, self.prototype_samples, self.dim).to(like)

    def _candidates(self, wsi_vote: torch.Tensor, second_vote: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) prototype indices per modality for the common token: the votes; in training every label's pair first."""
        votes = (wsi_vote.unsqueeze(1), second_vote.unsqueeze(1))
        if not self.training:
            return votes
        every = torch.arange(2 * self.n_bins, device=wsi_vote.device).expand(len(wsi_vote), -1)
        return tuple(torch.cat([every, vote], dim=1) for vote in votes)

    def _subset_round(
        self, wsi: torch.Tensor, second_view: BottleneckView, noise: NoiseSource, counts: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One patch subset through PIB and PID: logits (B, K, n_bins) per candidate; adds its picks to ``counts``."""
        rows = noise.subset(wsi.shape[1], self.bag_size).to(wsi.device)
        wsi_view = self.wsi_bottleneck(wsi[:, rows], self._prototype_noise(noise, wsi), self.wsi_keep)
        counts.scatter_add_(1, rows[wsi_view.rows], torch.ones_like(wsi_view.rows, dtype=counts.dtype))
        wsi_index, second_index = self._candidates(wsi_view.vote, second_view.vote)
        (wsi_mean, wsi_scale), (second_mean, second_scale) = (
            self.wsi_bottleneck.distributions(),
            self.second_bottleneck.distributions(),
        )
        joint_noise = noise.normal(wsi.shape[0], self.prototype_samples, self.dim).to(wsi)
        common = self.joint(
            [wsi_mean[wsi_index], second_mean[second_index]],
            [wsi_scale[wsi_index], second_scale[second_index]],
            joint_noise,
        )
        histology, pathways, common = self.disentangle(wsi_view.selected, second_view.selected, common)
        histology, pathways = histology.mean(dim=1), pathways.mean(dim=1)
        k = common.shape[1]
        fused = torch.cat(
            [histology.unsqueeze(1).expand(-1, k, -1), pathways.unsqueeze(1).expand(-1, k, -1), common], -1
        )
        return {
            "logits": self.head(fused),
            "histology": histology,
            "pathways": pathways,
            "common": common,
            "scores": wsi_view.scores,
            "prototype_logits": wsi_view.logits,
        }

    def auxiliary_loss(
        self, out: dict[str, torch.Tensor], settings: TrainSettings, bins: torch.Tensor, censorship: torch.Tensor
    ) -> torch.Tensor:
        """The label's-prototype NLL in place of the loop's, plus the regularisers / ``batch_divisor``.

        The loop adds NLL(``hazards``), the label-free evaluation rule's prediction; this returns
        NLL(label's candidate) - NLL(``hazards``) with the loop's alpha, so the sum is the
        authors' survival term. Every term is averaged over the patch subsets as theirs.
        """
        index = censorship.long() * self.n_bins + bins.long()
        picked = torch.arange(len(index), device=index.device)
        labelled = torch.sigmoid(out["candidate_logits"][picked, index])
        survival = nll_survival_loss(labelled, bins, censorship, settings.nll_alpha) - nll_survival_loss(
            out["hazards"], bins, censorship, settings.nll_alpha
        )
        contrast = prototype_contrast(out["wsi_scores"], index) + prototype_contrast(out["second_scores"], index)
        information = self.ib_weight * (
            prototype_survival_loss(out["wsi_prototype_logits"])
            + prototype_survival_loss(out["second_prototype_logits"])
        ) + self.kl_weight * (
            kl_to_standard_normal(*self.wsi_bottleneck.distributions())
            + kl_to_standard_normal(*self.second_bottleneck.distributions())
        )
        rounds = out["common"].shape[1]
        common = out["common"].gather(2, index.view(-1, 1, 1, 1).expand(-1, rounds, 1, self.dim)).squeeze(2)
        # subsets first, so each CLUB batch term runs over the patients of one subset round
        histology, pathways = out["histology"].transpose(0, 1), out["pathways"].transpose(0, 1)
        disentangling = self.club_specific(histology, pathways) + self.club_common(
            torch.cat([histology, pathways], dim=-1), common.transpose(0, 1)
        )
        regularisers = self.contrast_weight * contrast + information + self.mi_weight * disentangling
        return survival + regularisers / self.batch_divisor
