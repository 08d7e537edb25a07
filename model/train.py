"""Training one cross-validation fold: NLL + the model's auxiliary loss, gradients accumulated over patients.

Every epoch logs the training C-index (train-mode predictions as the epoch runs, as the
reference) and the held-out C-index (eval mode). Model selection, never on the held-out patients:

- ``selection="last"``: the last epoch's weights and held-out predictions.
- ``selection="inner"``: a stratified inner validation split of the training patients picks the
  epoch (its NLL, or its C-index), with optional early stopping after ``patience`` epochs without
  improvement; the model trains on the rest.
- ``selection="ensemble"``: ``ensemble_size`` models, one per inner fold of the training
  patients, each selected (and early-stopped) on its own inner fold; their hazards are averaged.
- Always computed besides, and labelled optimistic: the reference protocol, the epoch with the
  best held-out C-index (strict >), i.e. chosen on the fold that is reported.

``batch_size`` patients share one optimiser step (their gradients accumulated, MCAT's ``gc``:
each patient's loss divided by the batch size), so bags of any size train together. ``l1`` adds
MCAT's penalty on the genomic network's weights once per patient inside the accumulation (an
effective ``batch_size * l1`` per step, as MCAT's SNN recipe). With ``batch_size=1`` and ``l1=0``
a step is exactly the authors' batch-1 update. Each model says which weights the penalty covers
(``genomic_weights``) and what its own loss terms are (``auxiliary_loss``), so the loop never
asks which model it trains.

Inputs live on the training device for the whole fold and per-step scalars stay there until the
epoch ends, so a step does no host work besides the optional patch cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn

from model.bins import assign_bins
from model.data import Patient
from model.metrics import harrell_c
from model.survival import SurvivalNetwork, nll_survival_loss

SELECTIONS = ("last", "inner", "ensemble")
OPTIMISERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULERS = ("none", "poly", "cosine")
INNER_METRICS = ("loss", "c_index")
MEMBER_SEED_STRIDE = 100  # ensemble member m of fold k is seeded seed + k + 100 m


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (defaults: the authors' Adam 5e-4, weight decay 1e-5, 30 epochs, batch 1)."""

    epochs: int = 30
    lr: float = 5e-4
    weight_decay: float = 1e-5
    nll_alpha: float = 0.0
    decoupling_weight: float = 1.0
    distance: str = "mse"
    optimiser: str = "adam"  # adam, adamw or sgd, each with L2 weight decay
    momentum: float = 0.0  # sgd only: CMTA's authors ran 0.9, CCL's plain SGD 0
    scheduler: str = "none"  # per epoch: none, poly (DeReF's lr (1 - e/E)^0.9) or cosine (CMTA's, to 0)
    weighted_sampling: bool = False  # the reference's sampling with replacement over bin x censorship strata
    batch_size: int = 1  # patients per optimiser step, gradients accumulated (MCAT's gc)
    l1: float = 0.0  # per patient, on the genomic network's weights (MCAT's lambda_reg)
    selection: str = "last"
    inner_fraction: float = 0.2
    inner_metric: str = "loss"  # what the inner split monitors: NLL (lower) or C-index (higher)
    patience: int | None = None  # early stopping: epochs without inner improvement before stopping
    ensemble_size: int = 5
    max_patches: int | None = None  # the DeReF reference draws 30,000 patches from larger bags
    test_repeats: int = 3  # repeated tests of the selected model per test-time mode (the paper's Table X)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"optimiser {self.optimiser!r}; choose one of {sorted(OPTIMISERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler!r}; choose one of {SCHEDULERS}")
        if self.momentum and self.optimiser != "sgd":
            raise ValueError(f"momentum {self.momentum} is an SGD setting; the optimiser is {self.optimiser}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection {self.selection!r}; choose one of {SELECTIONS}")
        if self.inner_metric not in INNER_METRICS:
            raise ValueError(f"inner_metric {self.inner_metric!r}; choose one of {INNER_METRICS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be at least 1, not {self.epochs} and {self.batch_size}")
        if self.patience is not None and self.selection == "last":
            raise ValueError("patience (early stopping) needs an inner split: selection inner or ensemble")
        if self.test_repeats < 1:
            raise ValueError(f"test_repeats must be at least 1, not {self.test_repeats}")
        if self.selection == "ensemble" and self.ensemble_size < 2:
            raise ValueError(f"an ensemble needs at least 2 members, not {self.ensemble_size}")


@dataclass
class FoldResult:
    """Per-epoch log, the selected model's predictions, details and weights, and the optimistic pick.

    For an ensemble, predictions average the members' hazards, ``state_dict`` holds every member
    under ``member_<m>.``, ``details`` (attributions included) are member 0's (the members' latent
    spaces differ) and ``selected_epochs`` lists each member's epoch.
    """

    log: pd.DataFrame
    selected_epochs: list[int]
    predictions: pd.DataFrame  # held-out patients
    predictions_train: pd.DataFrame  # every training patient of the fold (inner ones included)
    details: dict[str, dict[str, np.ndarray]]
    state_dict: dict[str, torch.Tensor]
    best_epoch: int  # reference protocol: best held-out C-index (optimistic)
    best_epoch_predictions: pd.DataFrame
    inner_ids: list[str] = field(default_factory=list)
    parameters: int = 0  # of one network (coxph: its coefficients)
    repeats: pd.DataFrame = field(default_factory=pd.DataFrame)  # repeated tests: test_rfr, repeat, risk
    scaling: dict[str, torch.Tensor] = field(default_factory=dict)  # model.data.InputScaling's tensors

    @property
    def selected_epoch(self) -> int:
        """The epoch of the reported weights (for an ensemble, the latest of its members')."""
        return max(self.selected_epochs)


def epoch_lr(settings: TrainSettings, epoch: int) -> float:
    """The learning rate of an epoch (0-based) under the settings' per-epoch scheduler."""
    if settings.scheduler == "poly":
        return settings.lr * (1 - epoch / settings.epochs) ** 0.9
    if settings.scheduler == "cosine":  # torch's CosineAnnealingLR with T_max = epochs, eta_min = 0
        return settings.lr * (1 + math.cos(math.pi * epoch / settings.epochs)) / 2
    return settings.lr


def stackable(model: SurvivalNetwork, patients: Sequence[Patient]) -> bool:
    """Whether a step's patients can share one forward pass: no bags (sizes differ) and no batch norm.

    Then a window of patients is one batched forward whose mean loss, times the window's share of
    the step, is exactly the per-patient accumulation's sum (dropout masks are drawn differently).
    """
    no_bags = all(p.bag.numel() == 0 for p in patients)
    return no_bags and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def epoch_order(bins: np.ndarray, censorship: np.ndarray, rng: np.random.Generator, weighted: bool) -> np.ndarray:
    """One epoch's patient order: a permutation, or the reference's N/|stratum| weighted draw with replacement."""
    if not weighted:
        return rng.permutation(len(bins))
    strata = 2 * bins + censorship
    counts = np.bincount(strata, minlength=strata.max() + 1)
    weights = len(strata) / counts[strata]
    return rng.choice(len(strata), size=len(strata), replace=True, p=weights / weights.sum())


class _OnDevice:
    """A set of patients moved to the device once, with the optional patch cap."""

    def __init__(self, patients: list[Patient], device: torch.device, max_patches: int | None, seed: int) -> None:
        self.bags = [p.bag.to(device).unsqueeze(0) for p in patients]
        self.second = [[x.to(device).unsqueeze(0) for x in p.second] for p in patients]
        self.max_patches, self.seed = max_patches, seed
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def reset(self) -> _OnDevice:
        """Restart the patch-cap draws, so every evaluation caps each bag the same way."""
        self.generator.manual_seed(self.seed)
        return self

    def bag(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The bag, capped to ``max_patches`` random rows (kept in order), and the kept rows if capped."""
        bag = self.bags[i]
        if self.max_patches is None or bag.shape[1] <= self.max_patches:
            return bag, None
        keep = torch.randperm(bag.shape[1], generator=self.generator, device=bag.device)[: self.max_patches].sort()
        return bag[:, keep.values], keep.values


def predict(
    model: SurvivalNetwork,
    patients: list[Patient],
    settings: TrainSettings | None = None,
    on_device: _OnDevice | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Eval-mode risk, hazards, survival (and gate weights) per patient, plus per-patient details.

    Details are every other per-patient output (decoupled features, attention over patches, routers)
    except the model's ``loss_outputs``; with a patch cap, ``patch_rows`` says which rows of the bag the attention refers to.
    ``on_device`` reuses these patients' tensors already on the device (training evaluates every epoch).
    """
    settings = settings or TrainSettings()
    device = next(model.parameters()).device
    data = (on_device or _OnDevice(patients, device, settings.max_patches, settings.seed)).reset()
    model.eval()
    rows, details = [], {}
    with torch.no_grad():
        for i, p in enumerate(patients):
            bag, kept = data.bag(i)
            out = model(bag, data.second[i])
            row = {"patient_id": p.patient_id, "survival_months": p.time, "censorship": p.censorship}
            row["risk"] = float(out["risk"][0])
            for key, name in (("hazards", "hazard"), ("survival", "survival"), ("gate", "gate")):
                if key in out:
                    row |= {f"{name}_{k}": float(v) for k, v in enumerate(out[key][0])}
            rows.append(row)
            details[p.patient_id] = {
                k: v[0].float().cpu().numpy()
                for k, v in out.items()
                if k not in ("hazards", "survival", "risk", *model.loss_outputs) and v.ndim >= 2
            }
            if kept is not None:
                details[p.patient_id]["patch_rows"] = kept.cpu().numpy()
    # no patients (a model refit on every patient has no held-out ones): the columns, no rows
    return pd.DataFrame(
        rows, columns=None if rows else ["patient_id", "survival_months", "censorship", "risk"]
    ), details


def hazard_columns(table: pd.DataFrame) -> list[str]:
    """The ``hazard_k`` columns of a predictions table, in bin order."""
    return sorted((c for c in table.columns if c.startswith("hazard_")), key=lambda c: int(c.split("_")[1]))


def average_hazards(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One table from several models' predictions of the same patients: mean hazards, their survival and risk.

    Gate weights, if any, are averaged too; risk is recomputed as -sum S_k from the mean hazards.
    """
    first = tables[0]
    averaged = first[["patient_id", "survival_months", "censorship"]].copy()
    columns = [c for c in first.columns if c.startswith(("hazard_", "gate_"))]
    mean = np.mean([t[columns].to_numpy() for t in tables], axis=0)
    averaged[columns] = mean
    hazards = averaged[hazard_columns(averaged)].to_numpy()
    survival = np.cumprod(1 - hazards, axis=1)
    averaged["risk"] = -survival.sum(axis=1)
    for k in range(survival.shape[1]):
        averaged[f"survival_{k}"] = survival[:, k]
    return averaged[first.columns]


def attribute(
    model: SurvivalNetwork, patients: list[Patient], settings: TrainSettings
) -> dict[str, dict[str, np.ndarray]]:
    """Per patient, how much each patch and each second-modality input drives each decoupled feature.

    Gradient times input of the feature's L2 norm (eval mode), summed in absolute value over each
    patch's feature vector and over each gene family (or each MRI sequence's voxels), normalised
    to sum to 1 per feature and input: ``patch_attribution_<f>`` (N,) aligned with the bag rows
    (and ``patch_rows`` under a patch cap, as ``predict``) and ``second_attribution_<f>``. A
    feature that does not read an input (the pathology-specific feature and the genes) gets zeros.
    """
    features = model.decoupled_features()
    if not features:
        return {}
    device = next(model.parameters()).device
    data = _OnDevice(patients, device, settings.max_patches, settings.seed).reset()
    model.eval()
    result = {}
    for i, p in enumerate(patients):
        bag = data.bag(i)[0].detach().clone().requires_grad_(True)
        second = [x.detach().clone().requires_grad_(True) for x in data.second[i]]
        with torch.enable_grad():
            out = model(bag, second)
            scores = {}
            for name in features:
                grads = torch.autograd.grad(out[name].norm(), [bag, *second], retain_graph=True, allow_unused=True)
                bag_grad = torch.zeros_like(bag) if grads[0] is None else grads[0]
                scores[f"patch_attribution_{name}"] = (bag_grad * bag).sum(-1).abs()[0]
                scores[f"second_attribution_{name}"] = torch.stack(
                    [_second_share(g, x) for g, x in zip(grads[1:], second, strict=True)]
                ).flatten()
        result[p.patient_id] = {key: _normalised(value.detach().cpu().numpy()) for key, value in scores.items()}
    return result


def _second_share(grad: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """|gradient * input| summed over one family's genes, or per channel of an MRI volume (B, C, ...)."""
    if grad is None:
        grad = torch.zeros_like(x)
    contribution = (grad * x).abs()
    return contribution.flatten(2).sum(-1)[0] if x.ndim > 2 else contribution.sum().view(1)


def _normalised(values: np.ndarray) -> np.ndarray:
    total = values.sum()
    return (values / total if total > 0 else values).astype(np.float32)


def repeated_tests(models: Sequence[SurvivalNetwork], held_out: list[Patient], settings: TrainSettings) -> pd.DataFrame:
    """The selected model tested ``test_repeats`` times on the same held-out patients, per test-time mode.

    Each repeat reseeds the test-time generator (seed + 1000 + repeat): a deterministic mode gives
    identical repeats, a random reorganisation one draw per call, as the paper's Table X. An
    ensemble averages its members' hazards in every repeat.
    """
    tables = []
    configured = [m.test_rfr for m in models]
    for mode in models[0].test_modes():
        for repeat in range(settings.test_repeats):
            runs = []
            for m in models:
                m.test_rfr = mode
                m.reseed(settings.seed + 1000 + repeat)
                runs.append(predict(m, held_out, settings)[0])
            table = runs[0] if len(runs) == 1 else average_hazards(runs)
            columns = ["patient_id", "survival_months", "censorship", "risk"]
            tables.append(table[columns].assign(test_rfr=mode, repeat=repeat + 1))
    for m, mode in zip(models, configured, strict=True):
        m.test_rfr = mode
    return pd.concat(tables, ignore_index=True)


def _inner_split(train: list[Patient], fraction: float, seed: int) -> tuple[list[Patient], list[Patient]]:
    censorship = [p.censorship for p in train]
    stratify = censorship if min(np.bincount(censorship, minlength=2)) >= 2 else None
    fit, inner = train_test_split(train, test_size=fraction, random_state=seed, stratify=stratify)
    return list(fit), list(inner)


def _inner_folds(train: list[Patient], k: int, seed: int) -> list[tuple[list[Patient], list[Patient]]]:
    """k (fit, inner) partitions of the training patients, stratified by censorship."""
    if len(train) < 2 * k:
        raise ValueError(
            f"an ensemble of {k} inner folds needs at least {2 * k} training patients, not {len(train)}; "
            "lower training: ensemble_size or use selection: last"
        )
    censorship = np.array([p.censorship for p in train])
    if min(np.bincount(censorship, minlength=2)) < k:
        censorship = np.zeros_like(censorship)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        ([train[i] for i in fit], [train[i] for i in inner])
        for fit, inner in splitter.split(np.zeros(len(train)), censorship)
    ]


@dataclass
class _Member:
    """One trained network: its log, per-epoch held-out predictions and the selected epoch's outputs."""

    log: list[dict]
    held_per_epoch: list[pd.DataFrame]
    selected_epoch: int
    held: pd.DataFrame
    details: dict[str, dict[str, np.ndarray]]
    state: dict[str, torch.Tensor]
    model: SurvivalNetwork


def _inner_score(
    model: SurvivalNetwork, inner: list[Patient], data: _OnDevice, edges: np.ndarray, settings: TrainSettings
) -> dict:
    """Inner-split NLL and C-index (eval mode), and the monitored value (higher is better)."""
    table, _ = predict(model, inner, settings, data)
    hazards = torch.as_tensor(table[hazard_columns(table)].to_numpy())
    bins = torch.as_tensor(assign_bins(table["survival_months"].to_numpy(), edges))
    loss = float(nll_survival_loss(hazards, bins, torch.as_tensor(table["censorship"].to_numpy()), settings.nll_alpha))
    c_index = harrell_c(table["survival_months"], table["censorship"], table["risk"])
    monitored = -loss if settings.inner_metric == "loss" else c_index
    return {"inner_loss": loss, "inner_c_index": c_index, "monitored": monitored}


def _train_member(
    model: SurvivalNetwork,
    train: list[Patient],
    inner: list[Patient],
    held_out: list[Patient],
    edges: np.ndarray,
    settings: TrainSettings,
) -> _Member:
    """Train one network; evaluate the held-out (and inner) patients after every epoch."""
    rng = np.random.default_rng(settings.seed)
    device = torch.device(settings.device)
    model.to(device)
    # fused: one kernel over all parameters; the per-tensor loop costs more than the model's
    # backward pass for the 14.6M-parameter 3D ResNet on a CPU (0.15 s against 0.014 s per step)
    momentum = {"momentum": settings.momentum} if settings.optimiser == "sgd" else {}
    optimiser = OPTIMISERS[settings.optimiser](
        filter(lambda p: p.requires_grad, model.parameters()),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=True,
        **momentum,
    )
    penalised = model.genomic_weights() if settings.l1 > 0 else []
    times = np.array([p.time for p in train])
    censorship = np.array([p.censorship for p in train], dtype=np.int64)
    bins = assign_bins(times, edges)
    data = _OnDevice(train, device, settings.max_patches, settings.seed)
    held_data = _OnDevice(held_out, device, settings.max_patches, settings.seed)
    inner_data = _OnDevice(inner, device, settings.max_patches, settings.seed)
    bins_t = torch.as_tensor(bins, device=device)
    censorship_t = torch.as_tensor(censorship, device=device)
    stacked = stackable(model, train)
    empty_bag = torch.zeros(1, 0, 0, device=device)
    log: list[dict] = []
    held_per_epoch: list[pd.DataFrame] = []
    best_monitored, since_best = -np.inf, 0
    chosen: tuple[int, pd.DataFrame, dict, dict] = (0, pd.DataFrame(), {}, {})
    for epoch in range(settings.epochs):
        for group in optimiser.param_groups:
            group["lr"] = epoch_lr(settings, epoch)
        model.train()
        order = epoch_order(bins, censorship, rng, settings.weighted_sampling)
        losses, risks = [], []
        optimiser.zero_grad()
        for start in range(0, len(order), settings.batch_size):
            window = order[start : start + settings.batch_size]
            if stacked:  # one forward over the window: the same summed loss as per-patient accumulation
                second = [torch.cat(parts) for parts in zip(*(data.second[i] for i in window), strict=True)]
                rows = torch.as_tensor(window, device=device)
                out = model(empty_bag, second)
                loss = nll_survival_loss(out["hazards"], bins_t[rows], censorship_t[rows], settings.nll_alpha)
                loss = loss + model.auxiliary_loss(out, settings, bins_t[rows], censorship_t[rows])
                (loss * len(window) / settings.batch_size).backward()
                losses.append(loss.detach().expand(len(window)))
                risks.append(out["risk"].detach())
            else:
                for i in window:
                    out = model(data.bag(i)[0], data.second[i])
                    loss = nll_survival_loss(
                        out["hazards"], bins_t[i : i + 1], censorship_t[i : i + 1], settings.nll_alpha
                    )
                    loss = loss + model.auxiliary_loss(out, settings, bins_t[i : i + 1], censorship_t[i : i + 1])
                    (loss / settings.batch_size).backward()
                    losses.append(loss.detach().view(1))
                    risks.append(out["risk"].detach())
            if penalised:  # MCAT adds it once per patient; the weights do not move within a step
                (settings.l1 * len(window) * sum(w.abs().sum() for w in penalised)).backward()
            optimiser.step()
            optimiser.zero_grad()
        held, held_details = predict(model, held_out, settings, held_data)
        held_per_epoch.append(held)
        entry = {
            "epoch": epoch,
            "lr": optimiser.param_groups[0]["lr"],
            "loss": float(torch.cat(losses).mean()),
            "train_c_index": harrell_c(times[order], censorship[order], torch.cat(risks).cpu().numpy()),
            "held_out_c_index": harrell_c(held["survival_months"], held["censorship"], held["risk"]),
        }
        improved = not inner and epoch == settings.epochs - 1
        if inner:
            score = _inner_score(model, inner, inner_data, edges, settings)
            entry |= {"inner_loss": score["inner_loss"], "inner_c_index": score["inner_c_index"]}
            # a NaN score (an inner split with no comparable pair) never improves; epoch 0 is always kept
            improved = epoch == 0 or score["monitored"] > best_monitored
            if improved and not np.isnan(score["monitored"]):
                best_monitored = score["monitored"]
            since_best = 0 if improved else since_best + 1
        log.append(entry)
        if improved:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            chosen = (epoch, held, held_details, state)
        if settings.patience is not None and since_best >= settings.patience:
            break
    model.load_state_dict(chosen[3])
    return _Member(log, held_per_epoch, chosen[0], chosen[1], chosen[2], chosen[3], model)


def train_network(
    build: Callable[[int], SurvivalNetwork],
    train: list[Patient],
    held_out: list[Patient],
    edges: np.ndarray,
    settings: TrainSettings,
) -> FoldResult:
    """Train a network (an ensemble for ``selection: ensemble``) on ``train``; predict ``held_out`` every epoch.

    ``build(offset)`` returns a fresh network seeded ``settings.seed + offset`` (offset 0 for a
    single model, 100 m for ensemble member m).
    """
    if settings.selection == "ensemble":
        folds = _inner_folds(train, settings.ensemble_size, settings.seed)
    elif settings.selection == "inner":
        folds = [_inner_split(train, settings.inner_fraction, settings.seed)]
    else:
        folds = [(train, [])]
    members = []
    for m, (fit, inner) in enumerate(folds):
        offset = MEMBER_SEED_STRIDE * m
        member_settings = replace(settings, seed=settings.seed + offset)
        members.append(_train_member(build(offset), fit, inner, held_out, edges, member_settings))
    train_tables = [predict(member.model, train, settings)[0] for member in members]
    details = members[0].details
    for patient, scores in attribute(members[0].model, held_out, settings).items():
        details[patient] |= scores
    repeats = repeated_tests([member.model for member in members], held_out, settings)
    if len(members) == 1:
        member = members[0]
        log = pd.DataFrame(member.log)
        held, train_table, state = member.held, train_tables[0], member.state
    else:
        log = pd.concat([pd.DataFrame(mb.log).assign(member=m) for m, mb in enumerate(members)], ignore_index=True)
        held, train_table = average_hazards([mb.held for mb in members]), average_hazards(train_tables)
        state = {f"member_{m}.{k}": v for m, mb in enumerate(members) for k, v in mb.state.items()}
    best_epoch, best_table = _optimistic_pick(members)
    return FoldResult(
        log=log,
        selected_epochs=[mb.selected_epoch for mb in members],
        predictions=held,
        predictions_train=train_table,
        details=details,
        state_dict=state,
        best_epoch=best_epoch,
        best_epoch_predictions=best_table,
        inner_ids=[p.patient_id for _, inner in folds for p in inner] if settings.selection == "inner" else [],
        parameters=sum(p.numel() for p in members[0].model.parameters()),
        repeats=repeats,
    )


def _optimistic_pick(members: list[_Member]) -> tuple[int, pd.DataFrame]:
    """The reference protocol: the epoch whose held-out predictions (members averaged) score best.

    A member that stopped early contributes its last epoch's predictions to later epochs.
    """
    n_epochs = max(len(mb.held_per_epoch) for mb in members)
    best_c, best = -1.0, (0, members[0].held_per_epoch[0])
    for epoch in range(n_epochs):
        tables = [mb.held_per_epoch[min(epoch, len(mb.held_per_epoch) - 1)] for mb in members]
        table = tables[0] if len(tables) == 1 else average_hazards(tables)
        c = harrell_c(table["survival_months"], table["censorship"], table["risk"])
        if epoch == 0 or c > best_c:
            best_c, best = c, (epoch, table)
    return best
