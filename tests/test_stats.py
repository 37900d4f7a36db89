"""Statistics: effect sizes, CIs, permutation p-values, BH and power against references; planted effects recovered;
null data give uniform p-values and ~95% CI coverage; adapters and k-selection on small synthetic tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from emotion_circuits.stats import effects as S
from emotion_circuits.errors import DataError, ParamsError
from emotion_circuits.params import StatisticsParams

CFG = S.StatsConfig(n_boot=999, n_perm=999, seed=0)


def test_cohens_d_and_hedges_g_match_the_textbook_formulas():
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([3.0, 4, 5, 6, 7])
    assert S.cohens_d(x, y) == pytest.approx(-2 / np.sqrt(2.5))  # both SDs sqrt(2.5): pooled SD sqrt(2.5)
    assert S.cohens_d(x) == pytest.approx(3 / np.sqrt(2.5))
    # exact small-sample correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)) ~ 1 - 3 / (4 df - 1)
    assert S.hedges_correction(5, 5) == pytest.approx(1 - 3 / (4 * 8 - 1), abs=1e-3)
    assert S.hedges_g(x, y) == pytest.approx(S.cohens_d(x, y) * S.hedges_correction(5, 5))
    # vectorised along the last axis, and no scale -> NaN instead of inf
    batch = np.stack([x, x + 1])
    assert np.allclose(S.cohens_d(batch, np.stack([y, y])), [S.cohens_d(x, y), S.cohens_d(x + 1, y)])
    assert np.isnan(S.cohens_d(np.zeros(4), np.zeros(6)))


def test_bootstrap_ci_agrees_with_the_t_interval_on_normal_data():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    low, high = S.bootstrap_ci(x, y, 2000, 0.95, "BCa", np.random.default_rng(2))
    t = sps.ttest_ind(x, y).confidence_interval(0.95)
    assert low[0] == pytest.approx(t.low, abs=0.03) and high[0] == pytest.approx(t.high, abs=0.03)
    assert low[1] < S.cohens_d(x, y) < high[1]
    # seeded: the same generator state gives the same interval
    again = S.bootstrap_ci(x, y, 2000, 0.95, "BCa", np.random.default_rng(2))
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])


def test_sign_flip_p_is_exact_and_two_sample_p_matches_the_t_test():
    x = np.array([0.3, -0.1, 0.8, 0.5, 1.2, -0.4, 0.9, 0.6])
    flips = np.array(list(itertools.product([-1, 1], repeat=len(x))))
    exact = np.mean(np.abs((flips * x).mean(axis=1)) >= abs(x.mean()) - 1e-12)
    assert S.permutation_p(x, None, 1000, np.random.default_rng(0)) == pytest.approx(exact)
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 150), rng.normal(0, 1, 150)
    p = S.permutation_p(a, b, 4000, np.random.default_rng(4))
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, abs=0.02)
    assert S.permutation_p(np.zeros(5), np.zeros(7), 100, rng) == 1.0


def test_bh_matches_the_hand_computed_example_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    reject, adj = S.bh_adjust(p, 0.05)
    assert np.allclose(adj, [0.02, 0.04, 0.04, 0.02]) and reject.all()
    q = np.random.default_rng(0).uniform(size=50)
    assert np.allclose(S.bh_adjust(q, 0.05)[1], sps.false_discovery_control(q))
    assert np.isnan(S.bh_adjust(np.array([0.01, np.nan]), 0.05)[1][1])


def test_power_matches_cohens_tables():
    assert S.required_n(0.5, 0.8, 0.05) == pytest.approx(63.77, abs=0.05)   # Cohen (1988): 64 per group
    assert S.required_n(0.2, 0.8, 0.05) == pytest.approx(393.4, abs=0.2)    # 393-394 per group
    assert S.required_n(0.5, 0.8, 0.05, two_sample=False) == pytest.approx(33.4, abs=0.2)
    assert S.achieved_power(0.5, 64, 64, 0.05) == pytest.approx(0.80, abs=0.01)
    assert S.min_detectable_d(64, 64, 0.8, 0.05) == pytest.approx(0.5, abs=0.01)
    # unequal groups: more null runs help, but less than more effect units
    assert S.achieved_power(0.5, 12, 120, 0.05) > S.achieved_power(0.5, 12, 12, 0.05)
    table = S.power_table(S.StatsConfig())
    assert table["n_per_group_two_sample"] == {"d=0.2": 394, "d=0.5": 64}


def test_planted_effects_are_recovered_two_sample_and_one_sample():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.8, 1, 200), rng.normal(0, 1, 400)
    row = S.analyse_effect(x, y, CFG, np.random.default_rng(6))
    assert row["test"] == "two_sample_vs_null" and row["n"] == 200 and row["n_null"] == 400
    assert row["d"] == pytest.approx(0.8, abs=0.15) and row["d_ci_low"] < 0.8 < row["d_ci_high"]
    assert row["p"] < 0.01 and row["g"] < row["d"]
    one = S.analyse_effect(rng.normal(0.5, 1, 120), None, CFG, np.random.default_rng(7))
    assert one["test"] == "one_sample_vs_0" and one["d"] == pytest.approx(0.5, abs=0.2) and one["p"] < 0.01


def test_paired_effects_use_the_per_unit_differences():
    rng = np.random.default_rng(11)
    unit_level = rng.normal(0, 5, 30)  # large between-unit variance that pairing removes
    x, y = unit_level + 0.5 + rng.normal(0, 0.5, 30), unit_level + rng.normal(0, 0.5, 30)
    paired = S.analyse_effect(x, y, CFG, np.random.default_rng(12), paired=True)
    unpaired = S.analyse_effect(x, y, CFG, np.random.default_rng(12))
    diff = x - y
    assert paired["test"] == "paired_vs_null" and paired["d"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert paired["p"] < 0.01 < unpaired["p"]
    assert paired["diff"] == pytest.approx(unpaired["diff"])
    assert S.is_paired(np.arange(5), np.arange(5)[::-1])
    assert not S.is_paired(np.arange(5), np.repeat(np.arange(5), 2)) and not S.is_paired(-np.ones(3), -np.ones(3))
    df = pd.DataFrame({"family": "f", "effect": "e", "emotion": "anger", "metric": "m",
                       "group": ["effect"] * 30 + ["null"] * 30, "unit": np.r_[np.arange(30), np.arange(30)[::-1]],
                       "value": np.r_[x, y[::-1]]})
    row = S.analyse_samples(df, CFG).iloc[0]
    assert row["test"] == "paired_vs_null" and row["d"] == pytest.approx(paired["d"])


def test_null_data_give_uniform_p_values_and_95_percent_ci_coverage():
    reps = 400
    rng = np.random.default_rng(8)
    ps, covered = [], 0
    for i in range(reps):
        x, y = rng.normal(0, 1, 15), rng.normal(0, 1, 30)
        r = np.random.default_rng(1000 + i)
        ps.append(S.permutation_p(x, y, 199, r))
        low, high = S.bootstrap_ci(x, y, 499, 0.95, "percentile", r)
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
    return pd.DataFrame(rows, columns=list(S.SAMPLE_COLUMNS))


def test_analyse_samples_tests_each_effect_and_adjusts_within_families():
    df = _samples()
    out = S.analyse_samples(df, CFG)
    assert list(out[["family", "effect"]].itertuples(index=False, name=None)) == [
        ("A", "none"), ("A", "one"), ("A", "strong"), ("B", "strong")]
    a = out[out["family"] == "A"]
    assert np.allclose(a["p_adj"], S.bh_adjust(a["p"].to_numpy(), 0.05)[1])
    b = out[out["family"] == "B"].iloc[0]
    assert b["p_adj"] == b["p"]  # alone in its family: nothing to adjust
    strong = out[(out["family"] == "A") & (out["effect"] == "strong")].iloc[0]
    assert strong["significant"] and strong["n"] == 20 and strong["n_null"] == 60
    assert out.loc[out["effect"] == "one", "test"].iloc[0] == "one_sample_vs_0"
    # row order and table order do not matter: per-effect seeds
    shuffled = S.analyse_samples(df.sample(frac=1, random_state=1), CFG)
    pd.testing.assert_frame_equal(out, shuffled)
    only_b = S.analyse_samples(df[df["family"] == "B"], CFG)
    assert only_b.iloc[0]["d_ci_low"] == b["d_ci_low"] and only_b.iloc[0]["p"] == b["p"]


def test_validate_samples_rejects_bad_tables():
    df = _samples()
    with pytest.raises(DataError, match="missing column"):
        S.validate_samples(df.drop(columns="unit"), "x.parquet")
    with pytest.raises(DataError, match="group must be"):
        S.validate_samples(df.assign(group="control"), "x.parquet")
    with pytest.raises(DataError, match="only null rows"):
        S.validate_samples(df[df["group"] == "null"], "x.parquet")
    with pytest.raises(DataError, match="comes from both"):
        S.combine_samples({"a.parquet": df, "b.parquet": df})


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
    out = S.sweep_effect_samples(_generations(), ["p", "lex", "vader"])
    assert set(out["effect"]) == {"anger/blocks.3.hook_resid_pre/alpha=1/p_anger",
                                  "anger/blocks.3.hook_resid_pre/alpha=2/p_anger",
                                  "anger/blocks.3.hook_resid_pre/alpha=1/vader_compound",
                                  "anger/blocks.3.hook_resid_pre/alpha=2/vader_compound"}
    a2 = out[out["effect"] == "anger/blocks.3.hook_resid_pre/alpha=2/p_anger"]
    assert (a2["group"] == "effect").sum() == 2 and (a2["group"] == "null").sum() == 10  # the null's prompts
    assert set(a2["unit"]) == {0, 1}
    a1 = out[out["effect"] == "anger/blocks.3.hook_resid_pre/alpha=1/p_anger"]
    assert set(a1["group"]) == {"effect"} and len(a1) == 4  # no null at alpha 1: all prompts, vs 0
    res = S.analyse_samples(out, CFG)
    assert res.set_index("effect").loc["anger/blocks.3.hook_resid_pre/alpha=2/p_anger", "layer"] == 3
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
    table = S.select_k(supported, "zscore")
    per_layer = table.drop_duplicates(["layer_a", "layer_b"]).set_index(["layer_a", "layer_b"])["k_selected"]
    assert per_layer.to_dict() == {(0, 0): 5, (1, 2): 5, (2, 4): -1}
    summary = S.summarise_k(table)["m1->m2"]
    assert summary["k_selected"] == 5 and summary["n_layer_pairs_selecting"] == 2
    assert summary["by_k"]["k=5"]["n_layer_pairs_supported"] == 2
    assert table["p_perm_adj"].notna().all()
    none = S.summarise_k(S.select_k(_scores({(0, 0): (0.05, 0.2, 0.4)}, band), "zscore"))["m1->m2"]
    assert none["k_selected"] == -1


def test_declared_effect_samples_follow_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/heads").mkdir(parents=True)
    _samples().to_parquet(tmp_path / "results/heads/effect_samples.parquet")
    (tmp_path / "dvc.yaml").write_text("stages:\n  statistics:\n    cmd: x\n    deps:\n      - stages/statistics.py\n"
                                       "      - results/heads\n      - results/neurons/effect_samples.parquet\n")
    found = S.declared_effect_samples(tmp_path / "dvc.yaml")
    assert found == [S.Path("results/heads/effect_samples.parquet"),
                     S.Path("results/neurons/effect_samples.parquet")]
    with pytest.raises(DataError, match="declared in dvc.yaml but missing"):
        S.load_effect_samples(found)
    assert len(S.load_effect_samples(found[:1])) == len(_samples())
    with_nan = _samples()
    with_nan.loc[0, "value"] = np.nan
    with_nan.to_parquet(tmp_path / "results/heads/effect_samples.parquet")
    loaded = S.load_effect_samples(found[:1])
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
