"""Shipped weights: every file matches its card's sha256, loads into its spec without unpickling,
and its card carries what a user needs to trust and reproduce it."""

import json
from pathlib import Path

import pytest

from zoo import registry
from zoo.weights import headline, load_model, preprocessing, read_card, sha256_file, weights_dir

CARDS = sorted(p for p in weights_dir().glob("[!.]*.json") if not p.name.endswith(".history.json"))


def test_every_card_is_for_a_registered_model():
    for card in CARDS:
        assert card.stem in registry.names(), card.name


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_shipped_weights_match_their_card_and_spec(card_path: Path):
    card = json.loads(card_path.read_text())
    spec = registry.get(card["model"])
    weights = card_path.with_name(card["weights_file"])
    assert sha256_file(weights) == card["sha256"]
    model = load_model(spec, weights)  # checks names, shapes, dtypes; safetensors, never pickle
    assert sum(p.numel() for p in model.parameters()) == spec.params
    fitted = preprocessing(spec, card)   # the card holds the complete, fitted preprocessing
    assert set(fitted) == {t.name for t in spec.inputs} and all(p.fitted for p in fitted.values())
    assert card["params"] == spec.params
    dataset = card["dataset"]
    assert dataset["name"] == spec.dataset and dataset["fingerprint"] and dataset["samples"]["train"] > 0
    assert "/" not in dataset.get("source", "") and not any(
        str(v).startswith("/") for v in dataset.values()), "no paths of the training machine"
    assert card["command"].startswith(f"zoo train {spec.name}")
    assert spec.monitor in card["metrics"].get("val", card["metrics"]["train"])
    assert headline(read_card(spec.name, card_path.parent)) != "none"


def test_every_registered_model_ships_weights():
    shipped = {p.stem for p in CARDS}
    assert shipped == set(registry.names()), f"no shipped weights for {sorted(set(registry.names()) - shipped)}"


def test_zoo_list_shows_each_headline_metric():
    from typer.testing import CliRunner

    from zoo.cli import app
    rows = json.loads(CliRunner().invoke(app, ["list", "--json"]).output)
    for row in rows:
        assert row["weights"] and row["weights"] not in ("none", "trained"), row["name"]   # a figure, always


def test_thermometer_mlp_fits_the_readings_better_than_the_linear_model():
    """The book's point in ch. 6: the small MLP's training MSE is below the linear model's (from the shipped cards)."""
    mse = {name: json.loads((weights_dir() / f"{name}.json").read_text())["metrics"]["train"]["mse"]
           for name in ("thermometer-linear", "thermometer-mlp")}
    assert mse["thermometer-mlp"] < mse["thermometer-linear"]


def test_forecaster_cards_headline_their_out_of_time_skill():
    for name in ("electricity-rnn", "electricity-lstm", "electricity-gru"):
        card = json.loads((weights_dir() / f"{name}.json").read_text())
        oot = card["out_of_time"]
        assert [f["scored_year"] for f in oot["folds"]] == [2012, 2013] and 0 <= oot["alpha"] <= 0.3
        assert card["metrics"]["val"]["skill_vs_persistence"] == min(f["skill"] for f in oot["folds"])
        assert len(oot["months"]) == 24 and card["dataset"]["samples"]["val"] == 0
