"""Write weights/README.md from the shipped cards: one table, model -> dataset -> recipe -> validation
metric -> the course's own figure, and how to reproduce every row.

    python scripts/weights_readme.py
"""

from __future__ import annotations

import json

from zoo import registry
from zoo.weights import weights_dir

TARGETS = {  # the figure each model must beat (issue 7), next to the course's own result
    "water-mlp": "accuracy ≥ 0.68", "clouds-cnn": "accuracy ≥ 0.72, macro F1 ≥ 0.70",
    **{f"electricity-{cell}": "new year ≤ 1.00× persistence MSE (aim 0.99×); out-of-time estimate within 5 "
                              "points of it" for cell in ("rnn", "lstm", "gru")},
    "tinyvgg-pizza-steak": "accuracy ≥ 0.86", "insurance-mlp": "MAE ≤ 3,300", "food10-mobilenetv2": "accuracy ≥ 0.80",
    "boston-housing-mlp": "MAE ≤ 2.9 ($1000s)",
    "omniglot-two-output": "character ≥ 0.55, alphabet ≥ 0.45", "omniglot-two-input": "character ≥ 0.55",
    "lenet-mnist": "accuracy ≥ 0.985", "mnist-3v7-linear": "accuracy ≥ 0.975",
    "mnist-3v7-simplenet": "accuracy ≥ 0.98", "cifar10-net": "accuracy ≥ 0.60", "cifar2-fc": "accuracy ≥ 0.80",
    "fashion-mnist-mlp": "accuracy ≥ 0.87", "circles-mlp": "accuracy ≥ 0.99",
    "thermometer-linear": "w, b within 1 % of 5.37, −17.30", "thermometer-mlp": "MSE below the linear model's",
}


def _amount(value: float) -> str:
    """Dollars as whole numbers (insurance), $1000s (Boston housing) to two decimals."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def metric_text(spec, card) -> str:
    values = card["metrics"].get("val") or card["metrics"]["train"]
    split = "val" if "val" in card["metrics"] else "train"
    if "out_of_time" in card:
        oot = card["out_of_time"]
        years = ", ".join(f"{f['scored_year']} {100 * f['skill']:+.1f} %" for f in oot["folds"])
        worst = oot["worst_month"]
        text = (f"out of time (alpha {oot['alpha']:g}): skill vs persistence {years}; worst month {worst['month']} "
                f"{100 * worst['skill']:+.1f} %")
        return text + (f". **{card['caveat']}**" if card.get("caveat") else "")
    if spec.task == "regression" and "persistence_mse" in values:
        return (f"{split} MSE {values['mse']:.4f} vs persistence {values['persistence_mse']:.4f} "
                f"({100 * values['skill_vs_persistence']:+.1f} %)")
    if spec.task == "regression" and "median_mae" in values and spec.recipe.loss == "l1":
        return (f"{split} MAE {_amount(values['mae'])}, RMSE {_amount(values['rmse'])}, R² {values['r2']:.3f} "
                f"(training median: MAE {_amount(values['median_mae'])})")
    if spec.task == "regression":
        text = f"{split} MSE {values['mse']:.4f}"
        if "parameters" in card:
            text += " (w = {:.4f}, b = {:.4f})".format(card["parameters"]["weight"][0], card["parameters"]["bias"][0])
        return text
    if spec.task == "multi-output":
        return (f"{split} character acc {values['character_accuracy']:.4f}, "
                f"alphabet acc {values['alphabet_accuracy']:.4f}")
    return f"{split} accuracy {values['accuracy']:.4f}, macro F1 {values['f1_macro']:.4f}"


def _folder(spec) -> str:
    folder = registry.dataset(spec.dataset).folder
    return f"<data-root>/{folder}" if folder else "(built in)"


def main():
    rows, missing = [], []
    for spec in registry.specs():
        path = weights_dir() / f"{spec.name}.json"
        if not path.is_file():
            missing.append(spec.name)
            continue
        card = json.loads(path.read_text())
        r = card["recipe"]
        recipe = (f"{r['optimizer']} lr {r['lr']:g}, batch {r['batch_size']}, {card['epochs_run']} epochs "
                  f"(best {card['best_epoch']}), {r['scheduler']} schedule, aug {r['augment']}")
        dataset = f"{spec.dataset} ({card['dataset']['samples']['train']} train / {card['dataset']['samples']['val']} val)"
        rows.append(f"| `{spec.name}` | {dataset} | {recipe} | {metric_text(spec, card)} | "
                    f"{TARGETS.get(spec.name, 'accuracy ≥ 0.87')} | {spec.course_result} |")
    lines = [
        "# Shipped weights",
        "",
        "Each `<name>.safetensors` is the model's state dict; `<name>.json` is its card (dataset fingerprint, "
        "sample counts, recipe, seed, epochs, metrics per split, sha256, versions, the command that reproduces it). "
        "`<name>.curves.png` and `<name>.confusion.png` show training. Validation scores are on a split held out "
        "from the training data (stratified, fixed seed; for the electricity series, the latest windows).",
        "",
        "| model | dataset | recipe | validation | target | course's own result |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    if missing:
        lines += [f"Not trained yet: {', '.join(missing)}.", ""]
    lines += ["## What each recipe changes from the course, and why", "",
              "The architectures are the courses' own, unchanged; only the recipes differ.", ""]
    lines += [f"- `{spec.name}`: {spec.recipe_notes}" for spec in registry.specs()]
    lines += [""]
    lines += [
        "## Reproduce",
        "",
        "With the datasets laid out as in `../shared/data` (see its README):",
        "",
        "```bash",
        "zoo train --all --data-root ../shared/data",
        "```",
        "",
        "or one model at a time (the folder each model reads):",
        "",
        "| model | `--data` |",
        "| --- | --- |",
        *(f"| `{s.name}` | `{_folder(s)}` |" for s in registry.specs()),
        "",
    ]
    (weights_dir() / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
