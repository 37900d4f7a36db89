"""Statistics: effect sizes, CIs, permutation p-values, BH and power against references; planted effects recovered;
null data give uniform p-values and ~95% CI coverage; adapters and k-selection on small synthetic tables."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from emotion_circuits.stats import effects, intervals, kselect, multiple, nulls, power, samples, summary
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.params import StatisticsParams

CFG = StatisticsParams(n_boot=999, n_perm=999)


def test_cohens_d_and_hedges_g_match_the_textbook_formulas():
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([3.0, 4, 5, 6, 7])
    assert effects.cohens_d(x, y) == pytest.approx(-2 / np.sqrt(2.5))  # both SDs sqrt(2.5): pooled SD sqrt(2.5)
    assert effects.cohens_d(x) == pytest.approx(3 / np.sqrt(2.5))
    # exact small-sample correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)) ~ 1 - 3 / (4 df - 1)
    assert effects.hedges_correction(5, 5) == pytest.approx(1 - 3 / (4 * 8 - 1), abs=1e-3)
    assert effects.hedges_g(x, y) == pytest.approx(effects.cohens_d(x, y) * effects.hedges_correction(5, 5))
    # vectorised along the last axis, and no scale -> NaN instead of inf
    batch = np.stack([x, x + 1])
    assert np.allclose(effects.cohens_d(batch, np.stack([y, y])), [effects.cohens_d(x, y), effects.cohens_d(x + 1, y)])
    assert np.isnan(effects.cohens_d(np.zeros(4), np.zeros(6)))


def test_bootstrap_ci_agrees_with_the_t_interval_on_normal_data():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    low, high = intervals.bootstrap_ci(x, y, 2000, 0.95, "BCa", np.random.default_rng(2))
    t = sps.ttest_ind(x, y).confidence_interval(0.95)
    assert low[0] == pytest.approx(t.low, abs=0.03) and high[0] == pytest.approx(t.high, abs=0.03)
    assert low[1] < effects.cohens_d(x, y) < high[1]
    # seeded: the same generator state gives the same interval
    again = intervals.bootstrap_ci(x, y, 2000, 0.95, "BCa", np.random.default_rng(2))
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])


def test_interval_is_the_params_chosen_bootstrap_of_a_mean_or_a_mean_difference():
    rng = np.random.default_rng(21)
    x, y = rng.normal(0.5, 1, 200), rng.normal(0, 1, 300)
    cfg = StatisticsParams(n_boot=2000, ci_method="BCa")
    # planted effect recovered, and the interval is the t interval's on normal data
    low, high = intervals.interval(x, y, cfg, 3)
    t = sps.ttest_ind(x, y).confidence_interval(0.95)
    assert low > 0 and low < 0.5 < high
    assert low == pytest.approx(t.low, abs=0.04) and high == pytest.approx(t.high, abs=0.04)
    one = intervals.interval(x, None, cfg, 3)
    t1 = sps.ttest_1samp(x, 0).confidence_interval(0.95)
    assert one[0] == pytest.approx(t1.low, abs=0.04) and one[1] == pytest.approx(t1.high, abs=0.04)
    # the statistics stage's joint (difference, d) bootstrap gives the same difference CI for the same draws
    joint = intervals.bootstrap_ci(x, y, cfg.n_boot, cfg.ci_level, cfg.ci_method, np.random.default_rng(3))
    assert (low, high) == (joint[0][0], joint[1][0])
    # every method is scipy.stats.bootstrap's with the same seed, level and size
    for method in ("percentile", "basic", "BCa"):
        c = StatisticsParams(n_boot=500, ci_method=method, ci_level=0.9)
        ref = sps.bootstrap((x,), np.mean, n_resamples=500, confidence_level=0.9, method=method,
                            rng=np.random.default_rng(7)).confidence_interval
        assert intervals.interval(x, None, c, 7) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert intervals.interval(x, None, StatisticsParams(n_boot=500, ci_method="percentile"), 7) != \
        intervals.interval(x, None, StatisticsParams(n_boot=500, ci_method="basic"), 7)


def test_interval_on_noise_covers_zero_and_degenerate_data_have_no_width():
    cfg = StatisticsParams(n_boot=199, ci_method="percentile")
    rng = np.random.default_rng(22)
    covered = sum(lo <= 0 <= hi for lo, hi in (intervals.interval(rng.normal(0, 1, 20), None, cfg, i)
                                               for i in range(300)))
    assert 0.88 <= covered / 300 <= 0.98
    assert intervals.interval(np.full(5, 2.0), None, cfg, 0) == (2.0, 2.0)  # no spread: the point, not 0
    assert intervals.interval(np.full(5, 2.0), np.full(4, 2.0), cfg, 0) == (0.0, 0.0)
    assert all(np.isnan(intervals.interval(np.array([1.0]), None, cfg, 0)))


def test_vs_null_p_z_and_quantiles_with_an_explicit_alternative():
    rng = np.random.default_rng(23)
    null = rng.normal(0, 1, 999)
    high = nulls.vs_null(5.0, null, "greater")  # planted: far above every null draw
    assert high["p"] == 1 / 1000 and high["z"] == pytest.approx((5 - null.mean()) / null.std(ddof=1))
    assert high["n_null"] == 999 and high["null_sd"] == pytest.approx(null.std(ddof=1))
    assert high["q05"] == pytest.approx(np.quantile(null, 0.05)) and high["q95"] == pytest.approx(np.quantile(null, 0.95))
    assert nulls.vs_null(5.0, null, "less")["p"] == 1.0 and nulls.vs_null(5.0, null, "two-sided")["p"] == 1 / 1000
    assert nulls.vs_null(-5.0, null, "less")["p"] == 1 / 1000
    # noise: a value drawn from the null gives a uniform p
    ps = [nulls.vs_null(rng.normal(), rng.normal(0, 1, 199), "greater")["p"] for _ in range(400)]
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    # degenerate null: no scale, z None (never inf); p still counts ties
    flat = nulls.vs_null(1.0, np.zeros(10), "greater")
    assert flat["z"] is None and flat["null_sd"] == 0.0 and flat["p"] == 1 / 11
    assert nulls.vs_null(0.0, np.zeros(10), "greater")["p"] == 1.0
    with pytest.raises(ValueError, match="alternative"):
        nulls.vs_null(1.0, null, "bigger")
    with pytest.raises(TypeError):
        nulls.vs_null(1.0, null)  # no default: the caller says what it tests
    with pytest.raises(ValueError, match="at least one"):
        nulls.vs_null(1.0, np.array([]), "greater")


def test_vs_null_flags_a_null_without_spread_instead_of_a_noise_driven_z():
    """A constant null +- 1e-9 (a self-pair's permuted-label cosines): z and p must not follow the float noise."""
    rng = np.random.default_rng(5)
    null = 0.7 + rng.normal(0, 1e-9, 200)
    runs = [nulls.vs_null(0.7 + eps, null + rng.normal(0, 1e-9, 200), alt)
            for eps in (-3e-9, 0.0, 3e-9) for alt in ("greater", "less", "two-sided")]
    assert all(r["degenerate"] and r["z"] is None and r["p"] == 1.0 for r in runs)  # within tolerance: a tie
    above = nulls.vs_null(0.8, null, "greater")  # clearly beyond the point mass: still a stable answer
    assert above["degenerate"] and above["z"] is None and above["p"] == 1 / 201
    assert nulls.vs_null(0.8, null, "less")["p"] == 1.0 and nulls.vs_null(0.6, null, "two-sided")["p"] == 1 / 201
    # the tolerance is relative (DEGENERATE_RTOL x the magnitudes): a null with real spread at any scale keeps z
    for scale in (1e-12, 1.0, 1e6):
        ok = nulls.vs_null(3 * scale, rng.normal(0, scale, 200), "greater")
        assert not ok["degenerate"] and ok["z"] > 2
    edge = 1.0 + rng.normal(0, 1, 200) * nulls.DEGENERATE_RTOL * 0.5 / 1.0
    assert nulls.vs_null(1.0, edge, "greater")["degenerate"]
    edge = 1.0 + rng.normal(0, 1, 200) * nulls.DEGENERATE_RTOL * 3
    assert not nulls.vs_null(1.0, edge, "greater")["degenerate"]

def test_vs_null_agrees_with_scipy_permutation_test():
    rng = np.random.default_rng(24)
    x, y = rng.normal(0.3, 1, 25), rng.normal(0, 1, 25)
    diff = lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis)  # noqa: E731
    for alternative in ("greater", "less"):
        res = sps.permutation_test((x, y), diff, n_resamples=999, alternative=alternative, vectorized=True,
                                   rng=np.random.default_rng(5))
        ours = nulls.vs_null(float(res.statistic), res.null_distribution, alternative)
        assert ours["p"] == pytest.approx(res.pvalue)
    # two-sided: distance from the null's centre; matches scipy's doubled one-sided p on a symmetric null
    res = sps.permutation_test((x, y), diff, n_resamples=4999, alternative="two-sided", vectorized=True,
                               rng=np.random.default_rng(6))
    assert nulls.vs_null(float(res.statistic), res.null_distribution, "two-sided")["p"] == pytest.approx(
        res.pvalue, abs=0.02)


def test_sign_flip_p_is_exact_and_two_sample_p_matches_the_t_test():
    x = np.array([0.3, -0.1, 0.8, 0.5, 1.2, -0.4, 0.9, 0.6])
    flips = np.array(list(itertools.product([-1, 1], repeat=len(x))))
    exact = np.mean(np.abs((flips * x).mean(axis=1)) >= abs(x.mean()) - 1e-12)
    assert nulls.permutation_p(x, None, 1000, np.random.default_rng(0)) == pytest.approx(exact)
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 150), rng.normal(0, 1, 150)
    p = nulls.permutation_p(a, b, 4000, np.random.default_rng(4))
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, abs=0.02)
    assert nulls.permutation_p(np.zeros(5), np.zeros(7), 100, rng) == 1.0


def test_bh_matches_the_hand_computed_example_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    reject, adj = multiple.bh_adjust(p, 0.05)
    assert np.allclose(adj, [0.02, 0.04, 0.04, 0.02]) and reject.all()
    q = np.random.default_rng(0).uniform(size=50)
    assert np.allclose(multiple.bh_adjust(q, 0.05)[1], sps.false_discovery_control(q))
    assert np.isnan(multiple.bh_adjust(np.array([0.01, np.nan]), 0.05)[1][1])


def test_power_matches_cohens_tables():
    assert power.required_n(0.5, 0.8, 0.05) == pytest.approx(63.77, abs=0.05)   # Cohen (1988): 64 per group
    assert power.required_n(0.2, 0.8, 0.05) == pytest.approx(393.4, abs=0.2)    # 393-394 per group
    assert power.required_n(0.5, 0.8, 0.05, two_sample=False) == pytest.approx(33.4, abs=0.2)
    assert power.achieved_power(0.5, 64, 64, 0.05) == pytest.approx(0.80, abs=0.01)
    assert power.min_detectable_d(64, 64, 0.8, 0.05) == pytest.approx(0.5, abs=0.01)
    # unequal groups: more null runs help, but less than more effect units
    assert power.achieved_power(0.5, 12, 120, 0.05) > power.achieved_power(0.5, 12, 12, 0.05)
    table = power.power_table(StatisticsParams())
    assert table["n_per_group_two_sample"] == {"d=0.2": 394, "d=0.5": 64}


def test_planted_effects_are_recovered_two_sample_and_one_sample():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.8, 1, 200), rng.normal(0, 1, 400)
    row = summary.analyse_effect(x, y, CFG, np.random.default_rng(6))
    assert row["test"] == "two_sample_vs_null" and row["n"] == 200 and row["n_null"] == 400
    assert row["d"] == pytest.approx(0.8, abs=0.15) and row["d_ci_low"] < 0.8 < row["d_ci_high"]
    assert row["p"] < 0.01 and row["g"] < row["d"]
    one = summary.analyse_effect(rng.normal(0.5, 1, 120), None, CFG, np.random.default_rng(7))
    assert one["test"] == "one_sample_vs_0" and one["d"] == pytest.approx(0.5, abs=0.2) and one["p"] < 0.01


def test_paired_effects_use_the_per_unit_differences():
    rng = np.random.default_rng(11)
    unit_level = rng.normal(0, 5, 30)  # large between-unit variance that pairing removes
    x, y = unit_level + 0.5 + rng.normal(0, 0.5, 30), unit_level + rng.normal(0, 0.5, 30)
    paired = summary.analyse_effect(x, y, CFG, np.random.default_rng(12), paired=True)
    unpaired = summary.analyse_effect(x, y, CFG, np.random.default_rng(12))
    diff = x - y
    assert paired["test"] == "paired_vs_null" and paired["d"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert paired["p"] < 0.01 < unpaired["p"]
    assert paired["diff"] == pytest.approx(unpaired["diff"])
    assert summary.is_paired(np.arange(5), np.arange(5)[::-1])
    assert not summary.is_paired(np.arange(5), np.repeat(np.arange(5), 2)) and not summary.is_paired(-np.ones(3), -np.ones(3))
    df = pd.DataFrame({"family": "f", "effect": "e", "emotion": "anger", "metric": "m",
                       "group": ["effect"] * 30 + ["null"] * 30, "unit": np.r_[np.arange(30), np.arange(30)[::-1]],
                       "value": np.r_[x, y[::-1]]})
    row = summary.analyse_samples(df, CFG, 0).iloc[0]
    assert row["test"] == "paired_vs_null" and row["d"] == pytest.approx(paired["d"])


def test_null_data_give_uniform_p_values_and_95_percent_ci_coverage():
    reps = 400
    rng = np.random.default_rng(8)
    ps, covered = [], 0
    for i in range(reps):
        x, y = rng.normal(0, 1, 15), rng.normal(0, 1, 30)
        r = np.random.default_rng(1000 + i)
        ps.append(nulls.permutation_p(x, y, 199, r))
        low, high = intervals.bootstrap_ci(x, y, 499, 0.95, "percentile", r)
        covered += low[0] <= 0 <= high[0]
    ps = np.array(ps)
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09
    assert 0.90 <= covered / reps <= 0.98


def _samples():
    rng = np.random.default_rng(9)
    rows = []
    for family, effect, shift, with_null in (("A", "strong", 1.5, True), ("A", "none", 0.0, True),
                                             ("A", "one", 0.0, False), ("B", "strong", 1.5, True)):
        for u in range(20):
            rows.append((family, effect, "anger", "m", "effect", u, rng.normal(shift, 1)))
            if with_null:
                for _ in range(3):
                    rows.append((family, effect, "anger", "m", "null", u, rng.normal(0, 1)))
    return pd.DataFrame(rows, columns=list(samples.SAMPLE_COLUMNS))


def test_analyse_samples_tests_each_effect_and_adjusts_within_families():
    df = _samples()
    out = summary.analyse_samples(df, CFG, 0)
    assert list(out[["family", "effect"]].itertuples(index=False, name=None)) == [
        ("A", "none"), ("A", "one"), ("A", "strong"), ("B", "strong")]
    a = out[out["family"] == "A"]
    assert np.allclose(a["p_adj"], multiple.bh_adjust(a["p"].to_numpy(), 0.05)[1])
    b = out[out["family"] == "B"].iloc[0]
    assert b["p_adj"] == b["p"]  # alone in its family: nothing to adjust
    strong = out[(out["family"] == "A") & (out["effect"] == "strong")].iloc[0]
    assert strong["significant"] and strong["n"] == 20 and strong["n_null"] == 60
    assert out.loc[out["effect"] == "one", "test"].iloc[0] == "one_sample_vs_0"
    # row order and table order do not matter: per-effect seeds
    shuffled = summary.analyse_samples(df.sample(frac=1, random_state=1), CFG, 0)
    pd.testing.assert_frame_equal(out, shuffled)
    only_b = summary.analyse_samples(df[df["family"] == "B"], CFG, 0)
    assert only_b.iloc[0]["d_ci_low"] == b["d_ci_low"] and only_b.iloc[0]["p"] == b["p"]


def test_validate_samples_rejects_bad_tables():
    df = _samples()
    with pytest.raises(DataError, match="missing column"):
        samples.validate_samples(df.drop(columns="unit"), "x.parquet")
    with pytest.raises(DataError, match="group must be"):
        samples.validate_samples(df.assign(group="control"), "x.parquet")
    with pytest.raises(DataError, match="only null rows"):
        samples.validate_samples(df[df["group"] == "null"], "x.parquet")
    with pytest.raises(DataError, match="comes from both"):
        samples.combine_samples({"a.parquet": df, "b.parquet": df})


def _generations():
    rows = []
    rng = np.random.default_rng(10)
    prompts = [f"p{i}" for i in range(4)]
    for p in prompts:
        rows.append({"prompt_id": p, "kind": "baseline", "emotion": "none", "layer": -1, "alpha": 0.0,
                     "random_id": -1})
        for alpha in (1.0, 2.0):
            rows.append({"prompt_id": p, "kind": "emotion", "emotion": "anger", "layer": 3, "alpha": alpha,
                         "random_id": -1})
    for p in prompts[:2]:  # random controls only at alpha 2, on the first two prompts
        for j in range(5):
            rows.append({"prompt_id": p, "kind": "random", "emotion": "anger", "layer": 3, "alpha": 2.0,
                         "random_id": j})
    df = pd.DataFrame(rows)
    df["effect_p_anger"] = rng.normal(size=len(df))
    df["effect_vader_compound"] = rng.normal(size=len(df))
    return df


def test_sweep_adapter_pairs_effects_with_their_random_null_on_the_same_prompts():
    out = effects.sweep_effect_samples(_generations(), ["p", "lex", "vader"])
    assert set(out["effect"]) == {"anger/default/blocks.3.hook_resid_pre/alpha=1/p_anger",
                                  "anger/default/blocks.3.hook_resid_pre/alpha=2/p_anger",
                                  "anger/default/blocks.3.hook_resid_pre/alpha=1/vader_compound",
                                  "anger/default/blocks.3.hook_resid_pre/alpha=2/vader_compound"}
    a2 = out[out["effect"] == "anger/default/blocks.3.hook_resid_pre/alpha=2/p_anger"]
    assert (a2["group"] == "effect").sum() == 2 and (a2["group"] == "null").sum() == 10  # the null's prompts
    assert set(a2["unit"]) == {0, 1}
    a1 = out[out["effect"] == "anger/default/blocks.3.hook_resid_pre/alpha=1/p_anger"]
    assert set(a1["group"]) == {"effect"} and len(a1) == 4  # no null at alpha 1: all prompts, vs 0
    res = summary.analyse_samples(out, CFG, 0)
    assert res.set_index("effect").loc["anger/default/blocks.3.hook_resid_pre/alpha=2/p_anger", "layer"] == 3
    assert set(res["alpha"]) == {1.0, 2.0}


def _scores(overlaps, band):
    rows = []
    for (la, lb), ov in overlaps.items():
        for k, o, b in zip((2, 5, 10), ov, band):
            rows.append({"a": "m1", "b": "m2", "layer_a": la, "layer_b": lb, "variant": "zscore", "k": k,
                         "overlap_after": o, "vs_random_subspace.null_q95": b / 2,
                         "vs_permuted_labels.null_q95": b, "vs_random_subspace.p": 0.01,
                         "vs_permuted_labels.p": 0.02 if o > b else 0.5})
    return pd.DataFrame(rows)


def test_k_selection_finds_the_elbow_against_the_null_band():
    band = (0.1, 0.3, 0.5)
    supported = _scores({(0, 0): (0.2, 0.5, 0.55), (1, 2): (0.15, 0.45, 0.52), (2, 4): (0.05, 0.2, 0.4)}, band)
    table = kselect.select_k(supported, "zscore")
    per_layer = table.drop_duplicates(["layer_a", "layer_b"]).set_index(["layer_a", "layer_b"])["k_selected"]
    assert per_layer.to_dict() == {(0, 0): 5, (1, 2): 5, (2, 4): -1}
    summary = kselect.summarise_k(table)["m1->m2"]
    assert summary["k_selected"] == 5 and summary["n_layer_pairs_selecting"] == 2
    assert summary["by_k"]["k=5"]["n_layer_pairs_supported"] == 2
    assert table["p_perm_adj"].notna().all()
    none = kselect.summarise_k(kselect.select_k(_scores({(0, 0): (0.05, 0.2, 0.4)}, band), "zscore"))["m1->m2"]
    assert none["k_selected"] == -1


def test_declared_effect_samples_follow_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/heads").mkdir(parents=True)
    _samples().to_parquet(tmp_path / "results/heads/effect_samples.parquet")
    (tmp_path / "dvc.yaml").write_text("stages:\n  statistics:\n    cmd: x\n    deps:\n      - stages/statistics.py\n"
                                       "      - results/heads\n      - results/neurons/effect_samples.parquet\n")
    found = samples.declared_effect_samples(tmp_path / "dvc.yaml")
    assert found == [Path("results/heads/effect_samples.parquet"),
                     Path("results/neurons/effect_samples.parquet")]
    with pytest.raises(DataError, match="declared in dvc.yaml but missing"):
        samples.load_effect_samples(found)
    assert len(samples.load_effect_samples(found[:1])) == len(_samples())
    with_nan = _samples()
    with_nan.loc[0, "value"] = np.nan
    with_nan.to_parquet(tmp_path / "results/heads/effect_samples.parquet")
    loaded = samples.load_effect_samples(found[:1])
    assert len(loaded) == len(_samples()) - 1
    assert loaded.attrs["dropped_non_finite"] == {"results/heads/effect_samples.parquet": 1}


def test_statistics_params_are_validated():
    with pytest.raises(ParamsError, match="statistics.n_boot"):
        StatisticsParams(n_boot=10)
    with pytest.raises(ParamsError, match="statistics.ci_level"):
        StatisticsParams(ci_level=95)
    with pytest.raises(ParamsError, match="ci_method"):
        StatisticsParams(ci_method="bca")
    assert StatisticsParams(power_ds=[0.3]).power_ds == (0.3,)


GOEMO = "hf_roberta-base-go_emotions"  # the hf evaluator's own-metric model (evaluation/hf.py `label_metric`)


def _judged_generations(**extra) -> pd.DataFrame:
    """A steering generations table scored by the hub classifiers (their declared GoEmotions labels plus labels
    only known once the models load) and the keyword judge: 4 prompts x (baseline, each emotion, 3 random)."""
    from emotion_circuits import EMOTIONS
    from emotion_circuits.evaluation.catalog import metric_columns
    from emotion_circuits.steering.sweep import add_effects

    rows = []
    for p in range(4):
        base = {"prompt_id": f"p{p}", "layer": 3, "alpha": 2.0, **extra}
        rows.append({**base, "kind": "baseline", "emotion": "", "source_emotion": "", "random_id": -1})
        for e in EMOTIONS:
            rows.append({**base, "kind": "emotion", "emotion": e, "source_emotion": e, "random_id": -1})
            rows += [{**base, "kind": "random", "emotion": e, "source_emotion": e, "random_id": j} for j in range(3)]
    df = pd.DataFrame(rows)
    rng = np.random.default_rng(17)
    hf = [f"{GOEMO}_{label}" for label in ("gratitude", "anger", "remorse", "joy")]
    for col in [*hf, "hf_twitter-roberta-base-sentiment-latest_positive", "nll", "repetition"]:
        df[col] = rng.uniform(size=len(df))
    for e in EMOTIONS:
        df[f"kw_{e}"] = rng.integers(0, 2, size=len(df)).astype(float)
    df["degenerate"] = (df["repetition"] >= 0.5).astype(float)
    return add_effects(df, metric_columns(df))


OWN_HF_KW = {f"{GOEMO}_gratitude", f"{GOEMO}_anger", f"{GOEMO}_remorse", "kw_gratitude", "kw_anger", "kw_apology"}


@pytest.mark.parametrize("adapter", ["sweep", "single"])
def test_hf_and_keyword_scores_are_not_dropped_on_the_way_to_the_statistics(adapter):
    """The regression: the hub classifiers' columns never reached the statistics (an `hf_<emotion>` lookup that
    matched no column). Every own metric of the hf and kw families must become effect and null samples."""
    if adapter == "sweep":
        table = _judged_generations()
        out = effects.sweep_effect_samples(table, ["hf", "kw"])
        effect = "apology/default/blocks.3.hook_resid_pre/alpha=2/hf_roberta-base-go_emotions_remorse"
    else:
        table = _judged_generations(prompt_set="neutral", variant="prompt_only", null_matched=True)
        out = effects.single_effect_samples(table, ["hf", "kw"])
        effect = "apology/blocks.3.hook_resid_pre/alpha=2/neutral/prompt_only/hf_roberta-base-go_emotions_remorse"
    assert set(out["metric"]) == OWN_HF_KW
    assert out.groupby(["metric", "group"]).size().to_dict() == {
        **{(m, "effect"): 4 for m in OWN_HF_KW}, **{(m, "null"): 12 for m in OWN_HF_KW}}
    got = out[(out["effect"] == effect) & (out["group"] == "effect")].sort_values("unit")["value"]
    emo = table[(table["kind"] == "emotion") & (table["emotion"] == "apology")].sort_values("prompt_id")
    np.testing.assert_allclose(got, emo[f"effect_{GOEMO}_remorse"])
    res = summary.analyse_samples(out, CFG, 0)
    assert set(res["metric"]) == OWN_HF_KW and len(res) == 6 and res["p"].between(0, 1).all()


def test_hf_and_keyword_effects_reach_the_sweep_metrics():
    from types import SimpleNamespace

    from emotion_circuits.evaluation.catalog import families_in
    from emotion_circuits.params import SteeringCommonParams, SteeringParams
    from emotion_circuits.steering.sweep import summarise_effects
    from emotion_circuits.steering.tables import sweep_metrics

    table = _judged_generations(setting="seeds")
    assert families_in(table) == ["hf", "kw"]
    summ = summarise_effects(table, families_in(table), 1.0, 0, extra_keys=("setting",),
                             random_keys=("setting", "emotion", "layer", "alpha"))
    grid = SimpleNamespace(n_prompts=4, n_random=3, random_prompts=4, random_settings=("seeds",))
    out = sweep_metrics(summ, {}, [], SteeringCommonParams(primary_metric="kw"), grid,
                        SteeringParams(nll_budget=1.0, degenerate_budget=1.0), len(table))
    best = out["best_by_setting"]["seeds"]
    assert sorted(best) == ["anger", "apology", "gratitude"]
    for emotion, cell in best.items():
        own = table[(table["kind"] == "emotion") & (table["emotion"] == emotion)]
        hf_col = {"gratitude": "gratitude", "anger": "anger", "apology": "remorse"}[emotion]
        assert cell["other_metrics"] == {"hf": pytest.approx(own[f"effect_{GOEMO}_{hf_col}"].mean())}
        assert cell["effect"] == pytest.approx(own[f"effect_kw_{emotion}"].mean())
