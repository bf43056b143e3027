"""Out-of-time validation for forecasters: rolling origin over whole years, and the shrink towards persistence.

Fold k trains a fresh model on every window whose target falls before year k and scores year k (train <= 2011
-> score 2012, train <= 2012 -> score 2013). For each scored window it keeps the model's correction to the
persistence forecast, c = prediction - last reading, and the truth's, r = next - last reading; the forecast
shrunk by alpha, last + alpha * c, then costs mean((r - alpha c)^2) against persistence's mean(r^2) with no
retraining. Alpha is chosen to make the worst out-of-time month as good as possible (capped by the recipe):
the months where the pattern the model learnt stops holding decide, not the average."""

from __future__ import annotations

import numpy as np
import torch

ALPHAS = np.round(np.arange(0.0, 1.0001, 0.05), 2)
NEW_YEAR_CAVEAT = 0.01   # a worst out-of-time month within this of persistence: say it does not beat it


def years_of(times: np.ndarray) -> np.ndarray:
    return times.astype("datetime64[Y]").astype(int) + 1970


def year_folds(times: np.ndarray) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(scored year, indices trained on, indices scored) for each whole year after the first."""
    years = years_of(times)
    folds = []
    for year in sorted(set(years.tolist()))[1:]:
        folds.append((year, torch.from_numpy(np.flatnonzero(years < year)), torch.from_numpy(np.flatnonzero(years == year))))
    return folds


@torch.no_grad()
def corrections(model, windows: torch.Tensor, targets: torch.Tensor, device, batch: int = 4096):
    """(c, r): the model's correction to persistence and the truth's, per window (float64 numpy)."""
    model.eval()
    predicted = torch.cat([model(windows[i:i + batch].to(device)).cpu() for i in range(0, len(windows), batch)])
    last = windows[:, -1, :]
    return (predicted - last).double().numpy().ravel(), (targets - last).double().numpy().ravel()


def _ratio(c: np.ndarray, r: np.ndarray, alpha: float) -> float:
    return float(np.mean((r - alpha * c) ** 2) / np.mean(r ** 2))


def choose_alpha(folds: list[dict], cap: float) -> tuple[float, dict]:
    """folds: [{"year", "c", "r", "months" (YYYY-MM per window)}]. Returns the alpha whose worst out-of-time
    month is best (the smallest such alpha, then capped), and the report the card keeps."""
    months = [(f"{m}", fold["c"][fold["months"] == m], fold["r"][fold["months"] == m])
              for fold in folds for m in sorted(set(fold["months"]))]
    worst = [max(_ratio(c, r, a) for _, c, r in months) for a in ALPHAS]
    chosen = float(min(ALPHAS[int(np.argmin(worst))], cap))
    report = {
        "rule": f"alpha on a grid of 0 to 1 by 0.05 minimising the worst out-of-time month's MSE / persistence "
                f"MSE, capped at {cap:g}",
        "alpha": chosen,
        "folds": [{"scored_year": fold["year"], "windows": int(len(fold["r"])),
                   "skill": 1 - _ratio(fold["c"], fold["r"], chosen),
                   "skill_unshrunk": 1 - _ratio(fold["c"], fold["r"], 1.0),
                   "mse": float(np.mean((fold["r"] - chosen * fold["c"]) ** 2)),
                   "persistence_mse": float(np.mean(fold["r"] ** 2))} for fold in folds],
        "months": {m: 1 - _ratio(c, r, chosen) for m, c, r in months},
    }
    worst_month = min(report["months"], key=report["months"].get)
    report["worst_month"] = {"month": worst_month, "skill": report["months"][worst_month]}
    return chosen, report


def headline(report: dict) -> dict:
    """The card's validation figures: the worse fold's, at the chosen alpha."""
    fold = min(report["folds"], key=lambda f: f["skill"])
    return {"mse": fold["mse"], "persistence_mse": fold["persistence_mse"], "skill_vs_persistence": fold["skill"],
            "scored_year": fold["scored_year"]}


def caveat(report: dict) -> str | None:
    """A sentence for the card, `zoo info` and the bundle when the model barely beats persistence out of time."""
    worst = report["worst_month"]
    if worst["skill"] >= NEW_YEAR_CAVEAT:
        return None
    return (f"no better than repeating the last value on a new year: in its worst out-of-time month ({worst['month']}) "
            f"it was {100 * worst['skill']:+.1f} % against the persistence forecast, even shrunk towards it "
            f"(alpha {report['alpha']:g})")
