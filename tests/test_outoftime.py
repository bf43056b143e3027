"""Forecasters are validated out of time: rolling origin over whole years, the shrink towards persistence chosen
on the worst out-of-time month, the refit on every year, and the card's headline is the out-of-time figure."""

import json

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.training._outoftime import caveat, choose_alpha, year_folds

NEW_YEAR_CAVEAT = 0.01   # a worst out-of-time month within 1 % of persistence gets the caveat (stated independently)


def _two_years(path):
    """November 2012 to February 2013 at 15 minutes: a daily cycle whose phase changes with the year, and noise
    (two years, the second one scored; short, so that training is quick)."""
    stamps = np.arange(np.datetime64("2012-11-01T00:15"), np.datetime64("2013-03-01T00:00"), np.timedelta64(15, "m"))
    rng = np.random.default_rng(0)
    t = np.arange(len(stamps))
    year = stamps.astype("datetime64[Y]").astype(int) - 41
    values = np.sin(2 * np.pi * t / 96 + 0.4 * year) + 0.2 * rng.standard_normal(len(t))
    with open(path, "w") as f:
        f.write("timestamp,consumption\n")
        f.writelines(f"{str(s).replace('T', ' ')}:00,{v:.5f}\n" for s, v in zip(stamps, values))
    return path, len(stamps)


def test_folds_are_whole_years_in_order():
    times = np.array(["2011-03-01", "2011-12-31", "2012-06-01", "2013-01-01", "2013-05-05"], dtype="datetime64[s]")
    folds = [(year, train.tolist(), scored.tolist()) for year, train, scored in year_folds(times)]
    assert folds == [(2012, [0, 1], [2]), (2013, [0, 1, 2], [3, 4])]


def test_alpha_is_chosen_on_the_worst_month_and_capped():
    rng = np.random.default_rng(1)
    r = rng.standard_normal(400)
    good = r.copy()
    good[200:] = -r[200:]   # the second month's corrections point the wrong way: any alpha > 0 hurts it
    months = np.array(["2012-01"] * 200 + ["2012-02"] * 200)
    alpha, report = choose_alpha([{"year": 2012, "c": good, "r": r, "months": months}], cap=0.3)
    assert alpha == 0.0 and report["worst_month"]["skill"] == 0.0 and report["months"]["2012-01"] == 0.0
    alpha, _ = choose_alpha([{"year": 2012, "c": good[:200], "r": r[:200], "months": months[:200]}], cap=0.3)
    assert alpha == 0.3   # the perfect correction would take alpha 1: capped
    assert caveat(report).startswith("no better than repeating the last value on a new year")
    said = caveat(report)
    assert f"({report['worst_month']['month']})" in said and "+0.0 %" in said and "(alpha 0)" in said
    _, better = choose_alpha([{"year": 2012, "c": r, "r": r, "months": months}], cap=0.3)
    assert better["worst_month"]["skill"] >= NEW_YEAR_CAVEAT and caveat(better) is None


def test_the_card_headline_is_the_out_of_time_estimate(tmp_path):
    data, readings = _two_years(tmp_path / "electricity_train.csv")
    card = zoo.train("electricity-rnn", data, out=tmp_path / "runs", epochs=1)
    oot = card["out_of_time"]
    assert [f["scored_year"] for f in oot["folds"]] == [2013]   # trained on 2012, scored on 2013
    assert 0 <= oot["alpha"] <= 0.3 and sorted(oot["months"]) == ["2013-01", "2013-02"]
    worse = min(oot["folds"], key=lambda f: f["skill"])
    assert card["metrics"]["val"]["skill_vs_persistence"] == pytest.approx(worse["skill"])
    assert card["dataset"]["samples"] == {"train": readings - 96, "val": 0}   # refitted on every year
    state = zoo.weights.load_model(registry.get("electricity-rnn"), tmp_path / "runs" / "electricity-rnn.safetensors")
    assert float(state.alpha) == pytest.approx(oot["alpha"])   # the shrink travels with the weights (a buffer)
    worst_month = min(oot["months"], key=oot["months"].get)
    skill = oot["months"][worst_month]
    if skill < NEW_YEAR_CAVEAT:   # the card says so, naming the month, its skill and the shrink
        assert card["caveat"].startswith("no better than repeating the last value on a new year")
        assert f"({worst_month})" in card["caveat"] and f"{100 * skill:+.1f} %" in card["caveat"]
        assert f"(alpha {oot['alpha']:g})" in card["caveat"]
    else:
        assert card["caveat"] is None


def test_a_caveat_travels_from_the_card_to_info_the_bundle_and_predict(tmp_path):
    from typer.testing import CliRunner

    import zoo.runtime
    from zoo.cli import app
    from zoo.export import export

    zoo.train("electricity-gru", out=tmp_path, epochs=1)   # the built-in sample: one year, no folds
    card_path = tmp_path / "electricity-gru.json"
    card = json.loads(card_path.read_text())
    card["caveat"] = "no better than repeating the last value on a new year"
    card_path.write_text(json.dumps(card))
    (bundle,) = export("electricity-gru", "onnx", weights=tmp_path / "electricity-gru.safetensors", out=tmp_path / "b")
    assert zoo.runtime.load(bundle).manifest.caveat == card["caveat"]
    (tmp_path / "s.csv").write_text("consumption\n" + "".join(f"{np.sin(i / 9):.4f}\n" for i in range(120)))
    result = CliRunner().invoke(app, ["predict", str(bundle), str(tmp_path / "s.csv")])
    assert result.exit_code == 0 and "note: no better than repeating the last value" in " ".join(result.output.split())
