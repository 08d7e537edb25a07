"""Training a fold: planted signal is learned, runs are deterministic, splits are patient-level."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from model.baselines import SNN, MRIResNet
from model.bins import assign_bins, time_bin_edges
from model.data import Patient
from model.deref import DeReF
from model.encoders import SNNBlock
from model.metrics import harrell_c
from model.splits import read_mcat_split, stratified_folds
from model.survival import nll_survival_loss
from model.train import TrainSettings, epoch_lr, predict, stackable, train_network
from tests.tiny_cohort import planted_cohort

FAMILIES = [6, 6, 6, 6, 6, 6]


def test_harrell_c_matches_lifelines():
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(1)
    times, censorship, risk = rng.exponential(10, 50), rng.integers(0, 2, 50), rng.standard_normal(50)
    assert harrell_c(times, censorship, risk) == pytest.approx(
        concordance_index(times, -risk, 1 - censorship), abs=1e-9
    )


def test_deref_learns_a_planted_signal():
    patients = planted_cohort(families=FAMILIES)
    train, held_out = patients[:60], patients[60:]
    edges = time_bin_edges(np.array([p.time for p in train]), np.array([p.censorship for p in train]))
    torch.manual_seed(0)
    model = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32)
    result = train_network(lambda _: model, train, held_out, edges, TrainSettings(epochs=6, seed=0))
    log = result.log
    assert list(log.columns) == ["epoch", "lr", "loss", "train_c_index", "held_out_c_index"] and len(log) == 6
    assert log["held_out_c_index"].iloc[-1] >= 0.7
    predictions = result.predictions
    assert len(predictions) == 30 and {"risk", "hazard_0", "survival_3"} <= set(predictions.columns)


def test_training_is_deterministic_on_cpu():
    patients = planted_cohort(n=24, families=FAMILIES)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32, seed=0)
        runs.append(
            train_network(lambda _, m=model: m, patients[:16], patients[16:], edges, TrainSettings(epochs=2, seed=3))
        )
    pd.testing.assert_frame_equal(runs[0].predictions, runs[1].predictions)


def test_poly_decay_and_weighted_sampling():
    patients = planted_cohort(n=24, families=FAMILIES)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    torch.manual_seed(0)
    result = train_network(
        lambda _: DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32),
        patients[:16],
        patients[16:],
        edges,
        TrainSettings(epochs=3, scheduler="poly", weighted_sampling=True),
    )
    assert np.allclose(result.log["lr"], [5e-4 * (1 - e / 3) ** 0.9 for e in range(3)])


def test_stratified_folds_partition_the_patients():
    rng = np.random.default_rng(0)
    times, censorship = rng.exponential(20, 80), rng.integers(0, 2, 80)
    bins = assign_bins(times, time_bin_edges(times, censorship))
    patients = [f"P{i}" for i in range(80)]
    folds = stratified_folds(patients, bins, censorship, k=5, seed=1)
    held = [p for _, test in folds for p in test]
    assert sorted(held) == sorted(patients) and all(not set(train) & set(test) for train, test in folds)
    assert folds == stratified_folds(patients, bins, censorship, k=5, seed=1)


def test_mcat_split_files(tmp_path):
    pd.DataFrame({"train": ["A", "B", "C"], "val": ["D", "E", None]}).to_csv(tmp_path / "splits_0.csv")
    assert read_mcat_split(tmp_path / "splits_0.csv") == (["A", "B", "C"], ["D", "E"])
    pd.DataFrame({"train": ["A"], "test": ["B"]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="lacks column\\(s\\) \\['val'\\]"):
        read_mcat_split(tmp_path / "bad.csv")


@pytest.mark.realdata
def test_real_tcga_blca_splits(shared_data):
    table = pd.read_csv(shared_data / "tcga" / "tcga_blca_all_clean.csv.gz", usecols=["case_id"])
    everyone = set(table["case_id"])
    held = []
    for k in range(5):
        train, val = read_mcat_split(shared_data / "tcga" / "splits" / "tcga_blca" / f"splits_{k}.csv")
        assert len(train) + len(val) == 373 and set(train) | set(val) == everyone
        held += val
    assert sorted(held) == sorted(everyone)


def genomic_patients(n=24, seed=0, with_bags=False, signal=1.0):
    """Genomics-only patients (SNN inputs); ``with_bags`` adds dummy bags, which the SNN ignores."""
    rng = np.random.default_rng(seed)
    risk = rng.standard_normal(n)
    times = rng.exponential(24 * np.exp(-signal * risk)) + 0.5
    censored = (rng.uniform(size=n) < 0.3).astype(int)
    bag = torch.zeros(3, 4) if with_bags else torch.zeros(0, 0)
    return [
        Patient(
            f"G{i}",
            bag,
            [torch.tensor(rng.standard_normal(d) + signal * risk[i], dtype=torch.float32) for d in FAMILIES],
            float(times[i]),
            int(censored[i]),
        )
        for i in range(n)
    ]


def hand_step(model, patients, edges, lr, l1):
    """One Adam step on the batch's mean NLL plus MCAT's per-patient L1 (n x l1 x sum |W|)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    model.train()
    bins = torch.as_tensor(assign_bins(np.array([p.time for p in patients]), edges))
    censorship = torch.tensor([p.censorship for p in patients])
    losses = [
        nll_survival_loss(
            model(None, [x.unsqueeze(0) for x in p.second])["hazards"], bins[i : i + 1], censorship[i : i + 1]
        )
        for i, p in enumerate(patients)
    ]
    penalty = l1 * len(patients) * sum(w.abs().sum() for w in model.parameters() if w.ndim >= 2)
    (torch.stack(losses).mean() + penalty).backward()
    optimiser.step()
    return model


@pytest.mark.parametrize("with_bags", [False, True])
def test_accumulated_step_equals_one_step_on_the_mean_loss(with_bags):
    """batch_size = n: one step per epoch, per-patient accumulation (bags) or one stacked forward (none)."""
    patients = genomic_patients(n=12, with_bags=with_bags)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    torch.manual_seed(0)
    start = SNN(FAMILIES, dropout=0.0)
    assert stackable(start, patients) is not with_bags
    expected = hand_step(copy.deepcopy(start), patients, edges, lr=1e-3, l1=1e-3)
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=12, l1=1e-3, seed=0)
    result = train_network(lambda _: copy.deepcopy(start), patients, patients[:4], edges, settings)
    for name, value in expected.state_dict().items():
        # Adam's first step is lr * g / (|g| + eps): where the NLL gradient and the L1 term nearly
        # cancel, summation order alone moves a few weights by up to lr
        differ = (result.state_dict[name] - value).abs()
        assert float((differ > 1e-6).float().mean()) < 1e-3 and float(differ.max()) <= 1e-3, name


def test_l1_covers_the_genomic_network_only():
    snn = SNN(FAMILIES)
    assert sum(w.numel() for w in snn.genomic_weights()) == sum(p.numel() for p in snn.parameters() if p.ndim >= 2)
    deref = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32)
    penalised = {id(w) for w in deref.genomic_weights()}
    snn_blocks = [m for m in deref.modules() if isinstance(m, SNNBlock)]
    assert snn_blocks and penalised == {id(p) for m in snn_blocks for p in m.parameters() if p.ndim >= 2}
    assert not stackable(MRIResNet(2, mri_depth=10), [Patient("M", torch.zeros(0, 0), [], 1.0, 0)])


def test_early_stopping_keeps_the_best_inner_epoch():
    patients = genomic_patients(n=40, signal=0.0, seed=2)  # noise: the inner loss soon rises
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    settings = TrainSettings(epochs=15, lr=3e-3, selection="inner", patience=2, seed=1)
    result = train_network(lambda _: SNN(FAMILIES), patients[:32], patients[32:], edges, settings)
    log = result.log
    best = int(log["inner_loss"].idxmin())
    assert result.selected_epoch == best and len(log) < 15
    assert len(log) - 1 - best == 2  # stopped exactly `patience` epochs after the best
    assert len(result.inner_ids) == 7 and len(result.predictions_train) == 32


def test_ensemble_averages_its_members_hazards():
    patients = genomic_patients(n=30)
    train, held = patients[:24], patients[24:]
    edges = time_bin_edges(np.array([p.time for p in train]), np.array([p.censorship for p in train]))
    settings = TrainSettings(epochs=2, selection="ensemble", ensemble_size=3, batch_size=4, seed=5)

    def build(offset):
        torch.manual_seed(5 + offset)
        return SNN(FAMILIES)

    result = train_network(build, train, held, edges, settings)
    assert set(result.log["member"]) == {0, 1, 2} and len(result.selected_epochs) == 3
    members = []
    for m in range(3):
        member = SNN(FAMILIES)
        prefix = f"member_{m}."
        member.load_state_dict({k[len(prefix) :]: v for k, v in result.state_dict.items() if k.startswith(prefix)})
        members.append(predict(member, held)[0])
    hazards = [c for c in result.predictions.columns if c.startswith("hazard_")]
    mean = np.mean([t[hazards].to_numpy() for t in members], axis=0)
    assert np.allclose(result.predictions[hazards].to_numpy(), mean, atol=1e-6)
    survival = np.cumprod(1 - mean, axis=1)
    assert np.allclose(result.predictions["risk"], -survival.sum(1), atol=1e-6)
    assert sorted(result.predictions_train["patient_id"]) == sorted(p.patient_id for p in train)
    assert result.log.groupby("member")["inner_c_index"].count().min() >= 1


def test_repeated_tests_have_zero_spread_when_deterministic_and_vary_when_random():
    patients = planted_cohort(n=24, families=FAMILIES)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    torch.manual_seed(0)
    model = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32, seed=0)
    result = train_network(
        lambda _: model, patients[:16], patients[16:], edges, TrainSettings(epochs=1, test_repeats=3)
    )
    repeats = result.repeats
    assert set(repeats["test_rfr"]) == {"average", "random"} and sorted(set(repeats["repeat"])) == [1, 2, 3]
    risk = repeats.pivot_table(index="patient_id", columns=["test_rfr", "repeat"], values="risk")
    assert (risk["average"].nunique(axis=1) == 1).all()  # the deterministic test repeats exactly
    assert np.allclose(risk["average"][1], result.predictions.set_index("patient_id").loc[risk.index, "risk"])
    assert (risk["random"].nunique(axis=1) > 1).any()  # one random reorganisation per call differs
    assert model.test_rfr == "average"  # the configured mode is restored


def test_a_model_without_test_time_randomness_repeats_once_per_repeat():
    patients = genomic_patients(n=16)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]), 2)
    result = train_network(
        lambda _: SNN(FAMILIES, n_bins=2), patients[:12], patients[12:], edges, TrainSettings(epochs=1, test_repeats=2)
    )
    assert set(result.repeats["test_rfr"]) == {"none"} and len(result.repeats) == 2 * 4
    assert result.repeats.groupby("patient_id")["risk"].nunique().eq(1).all()


def test_attributions_cover_each_decoupled_feature_and_ignore_inputs_it_does_not_read():
    patients = planted_cohort(n=20, families=FAMILIES)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    torch.manual_seed(0)
    result = train_network(
        lambda _: DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32),
        patients[:14],
        patients[14:],
        edges,
        TrainSettings(epochs=1),
    )
    for patient in patients[14:]:
        details = result.details[patient.patient_id]
        for feature in ("genomic", "pathology", "shared", "explore"):
            patches, second = details[f"patch_attribution_{feature}"], details[f"second_attribution_{feature}"]
            assert patches.shape == (len(patient.bag),) and second.shape == (len(FAMILIES),)
        # the pathology-specific feature reads no gene; the genomic-specific one no patch
        assert not details["second_attribution_pathology"].any() and not details["patch_attribution_genomic"].any()
        for feature in ("pathology", "shared", "explore"):
            assert details[f"patch_attribution_{feature}"].sum() == pytest.approx(1.0, abs=1e-5)
        for feature in ("genomic", "shared", "explore"):
            assert details[f"second_attribution_{feature}"].sum() == pytest.approx(1.0, abs=1e-5)


def test_attribution_finds_the_patch_a_feature_depends_on():
    from model.train import attribute

    torch.manual_seed(0)
    model = DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32)
    patient = planted_cohort(n=1, families=FAMILIES)[0]
    bag = torch.zeros_like(patient.bag)
    bag[3] = 5 * torch.randn(32)  # only patch 3 carries a signal: gradient x input is zero elsewhere
    planted = Patient("X", bag, patient.second, patient.time, patient.censorship)
    scores = attribute(model, [planted], TrainSettings())["X"]
    assert int(np.argmax(scores["patch_attribution_pathology"])) == 3
    assert scores["patch_attribution_pathology"][3] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("none", [5e-4] * 4),
        ("poly", [5e-4 * (1 - e / 4) ** 0.9 for e in range(4)]),
        ("cosine", [5e-4, 5e-4 * (1 + 2**-0.5) / 2, 2.5e-4, 5e-4 * (1 - 2**-0.5) / 2]),
    ],
)
def test_schedulers_give_each_epochs_learning_rate(scheduler, expected):
    settings = TrainSettings(epochs=4, scheduler=scheduler)
    assert np.allclose([epoch_lr(settings, e) for e in range(4)], expected)


def test_cosine_schedule_is_torchs_cosine_annealing():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.SGD([parameter], lr=1e-3)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=7, eta_min=0)
    torchs = []
    for _ in range(7):
        torchs.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        annealing.step()
    assert np.allclose(torchs, [epoch_lr(TrainSettings(lr=1e-3, epochs=7, scheduler="cosine"), e) for e in range(7)])


@pytest.mark.parametrize(("optimiser", "momentum"), [("sgd", 0.0), ("sgd", 0.9), ("adamw", 0.0)])
def test_each_optimiser_trains(optimiser, momentum):
    patients = planted_cohort(n=12, families=FAMILIES)
    edges = time_bin_edges(np.array([p.time for p in patients]), np.array([p.censorship for p in patients]))
    settings = TrainSettings(epochs=2, optimiser=optimiser, momentum=momentum, lr=1e-3)
    result = train_network(
        lambda _: DeReF(FAMILIES, wsi_dim=32, dim=64, c2=32), patients[:8], patients[8:], edges, settings
    )
    assert np.isfinite(result.log["loss"]).all() and len(result.predictions) == 4


def test_momentum_is_refused_outside_sgd():
    with pytest.raises(ValueError, match="SGD setting"):
        TrainSettings(optimiser="adam", momentum=0.9)
