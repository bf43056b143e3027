"""What a reduced precision costs: the model's own metric, top-1 agreement and output error, measured on
held-out data through the bundle as users run it (a `zoo.runtime` Session), judged against a budget.

The data (`held_out`) is read by the model's own dataset adapter. With `--data`: the training data, split
as the trainer split it for these weights (the card's validation fraction and seed), so the fp32 metric
is the card's own validation metric when the data is the same; int8-static calibrates on samples of the
training part only. Without `--data`: the built-in sample, calibration from its train split and validation
on its test split. fp32 is eager PyTorch on the source weights (the fp32 bundle matches it within the
parity tolerance).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from zoo.errors import ZooError

EVAL_BATCH = 256
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class Budget:
    """How much accuracy a reduced precision may cost. Classifiers: every head's top-1 class must agree
    with fp32's on `min_agreement` of the validation samples, and the model's monitored metric (accuracy)
    may fall by at most `max_drop` (0.01 = 1 point). Regressors and series: the MSE may rise by
    at most `max_mse_increase`, relative (0.02 = 2 %)."""
    min_agreement: float = 0.99
    max_drop: float = 0.01
    max_mse_increase: float = 0.02

    def __post_init__(self):
        if not 0 <= self.min_agreement <= 1:
            raise ZooError(f"--min-agreement must be between 0 and 1 (0.99 = 99 %), got {self.min_agreement:g}")
        for name in ("max_drop", "max_mse_increase"):
            if not 0 <= getattr(self, name) < math.inf:   # nan and inf would let any accuracy through
                raise ZooError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name):g}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Budget":
        data = data or {}
        return cls(**{f.name: float(data[f.name]) for f in fields(cls) if f.name in data})


@dataclass
class HeldOut:
    """Model inputs (float32 numpy arrays by input name) to calibrate on and to validate on, the validation
    targets (tensors by output name) and what the data is (`about`, for the manifest)."""
    calibration: dict
    inputs: dict
    targets: dict
    about: dict

def _model_inputs(preprocess: dict, dataset) -> dict:
    from zoo.data import model_inputs

    return {k: np.ascontiguousarray(v.numpy(), dtype=np.float32)
            for k, v in model_inputs(preprocess, dataset.inputs).items()}


def held_out(spec, dataset, preprocess: dict, card: dict | None, calibration_samples: int) -> HeldOut:
    """The calibration and validation samples for `spec`'s weights (see the module's docstring): from
    `dataset` (the training data as `zoo.data.load` read it from --data), or the built-in sample when None."""
    import torch

    from zoo import data as zdata
    from zoo.training import card_split

    if dataset is None:
        pool, validation = zdata.load(spec, None, "train"), zdata.load(spec, None, "test")
        about = {"source": "built-in", "fingerprint": validation.fingerprint,
                 "validation": "the built-in sample's test split", "calibration": "the built-in sample's train split",
                 "same_data_as_card": None}
        if card and (card.get("dataset") or {}).get("source") == "files":
            about["note"] = ("synthetic built-in sample, not the data these weights were trained on: the metric "
                             "is not the weights' real figure, only its comparison with fp32 is meaningful; pass "
                             "--data for the real validation split")
    else:
        train_idx, val_idx = card_split(dataset, spec, card)
        if len(val_idx) == 0:   # the recipe holds nothing out (thermometer: 11 readings)
            val_idx, what = torch.arange(len(dataset)), f"all {len(dataset)} samples (the recipe holds none out)"
        else:
            what = "the trainer's validation split of the training data (the card's fraction and seed)"
        pool, validation = dataset.subset(train_idx), dataset.subset(val_idx)
        trained_on = ((card or {}).get("dataset") or {}).get("fingerprint")
        about = {"source": dataset.source, "fingerprint": dataset.fingerprint, "validation": what,
                 "calibration": "the trainer's training split", "same_data_as_card": (
                     None if card is None else trained_on == dataset.fingerprint)}
    if len(validation) == 0:
        raise ZooError(f"{spec.name}: no validation samples to measure a reduced precision on")
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    chosen = torch.randperm(len(pool), generator=generator)[:calibration_samples].sort().values
    about["validation_samples"] = len(validation)
    return HeldOut(calibration=_model_inputs(preprocess, pool.subset(chosen)),
                   inputs=_model_inputs(preprocess, validation), targets=dict(validation.targets), about=about)


def _batches(inputs: dict):
    n = len(next(iter(inputs.values())))
    for start in range(0, n, EVAL_BATCH):
        yield {k: v[start:start + EVAL_BATCH] for k, v in inputs.items()}


def eager_outputs(spec, model, inputs: dict) -> dict:
    """fp32: eager PyTorch on the source weights, outputs by name."""
    from zoo.export._parity import eager

    parts = [eager(model, batch) for batch in _batches(inputs)]
    return {t.name: np.concatenate([p[i] for p in parts]) for i, t in enumerate(spec.outputs)}


def bundle_outputs(spec, session, inputs: dict) -> dict:
    parts = [session.predict(batch) for batch in _batches(inputs)]
    return {t.name: np.concatenate([p[t.name] for p in parts]) for t in spec.outputs}


def _metrics(spec, outputs: dict, held: HeldOut) -> dict:
    import torch

    from zoo.training import Metrics, scalars

    metrics = Metrics(spec)
    metrics.update({k: torch.from_numpy(v) for k, v in outputs.items()}, held.targets,
                   {k: torch.from_numpy(v) for k, v in held.inputs.items()})
    return scalars(metrics.compute())


def _top1(spec, values: np.ndarray) -> np.ndarray:
    if values.shape[-1] > 1:
        return values.argmax(axis=-1)
    return values[:, 0] > (0.5 if spec.output_kind == "probability" else 0.0)


def measure(spec, reference: dict, produced: dict, held: HeldOut, budget: Budget, card: dict | None = None) -> dict:
    """The accuracy report of a reduced-precision bundle: `produced` (its outputs on `held.inputs`) against
    fp32 `reference`, judged against `budget`."""
    fp32, bundle = _metrics(spec, reference, held), _metrics(spec, produced, held)
    # classifiers: their monitored metric (accuracy); every regressor: its MSE, whatever it is trained to
    # monitor (a skill against persistence, an MAE), as the budget says
    monitor = spec.monitor if spec.is_classifier else "mse"
    outputs, checks, failures = {}, [], []
    for t in spec.outputs:
        ref, got = reference[t.name].astype(np.float64), produced[t.name].astype(np.float64)
        diff = np.abs(got - ref)
        outputs[t.name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
        if spec.is_classifier:
            agree = float(np.mean(_top1(spec, ref) == _top1(spec, got)))
            outputs[t.name]["top1_agreement"] = agree
            ok = agree >= budget.min_agreement
            checks.append({"check": f"top-1 agreement with fp32 ({t.name})", "value": agree,
                           "limit": budget.min_agreement, "passed": ok})
            if not ok:
                failures.append(f"top-1 agreement with fp32 on {t.name} is {agree:.2%}, "
                                f"{(budget.min_agreement - agree) * 100:.2f} points under the budget's "
                                f"{budget.min_agreement:.2%} (--min-agreement)")
    before, after = fp32[monitor], bundle[monitor]
    if spec.is_classifier:
        drop = before - after
        ok = drop <= budget.max_drop + 1e-12
        checks.append({"check": f"{monitor} drop", "value": drop, "limit": budget.max_drop, "passed": ok})
        if not ok:
            failures.append(f"{monitor} fell {drop * 100:.2f} points ({before:.4f} -> {after:.4f}), "
                            f"{(drop - budget.max_drop) * 100:.2f} over the budget's {budget.max_drop * 100:g} "
                            "(--max-drop)")
    else:
        rise = (after - before) / before if before > 0 else (0.0 if after == before else float("inf"))
        ok = rise <= budget.max_mse_increase + 1e-12
        checks.append({"check": f"{monitor} increase (relative)", "value": rise, "limit": budget.max_mse_increase,
                       "passed": ok})
        if not ok:
            failures.append(f"{monitor} rose {rise:.2%} ({before:.5g} -> {after:.5g}), "
                            f"{(rise - budget.max_mse_increase) * 100:.2f} points over the budget's "
                            f"{budget.max_mse_increase:.0%} (--max-mse-increase)")
    report = {"reference": "fp32: eager PyTorch on the source weights", "data": dict(held.about), "metric": monitor,
              "metrics": {"fp32": fp32, "bundle": bundle}, "outputs": outputs, "budget": budget.to_dict(),
              "checks": checks, "failures": failures, "passed": not failures}
    card_value = ((card or {}).get("metrics") or {}).get("val", {}).get(monitor)
    if held.about.get("same_data_as_card") and card_value is not None:
        report["card_metric"] = card_value   # the weights card's validation figure, for comparison with fp32's
    return report


def refusal(spec_name: str, precision: str, report: dict) -> str:
    """The one line that says why a reduced-precision bundle was not written."""
    data = report["data"]
    where = f"{data['validation_samples']} validation samples ({data['source']})"
    return f"{spec_name} {precision} misses its accuracy budget on {where}: {'; '.join(report['failures'])}; no bundle written"


# --- rendering ------------------------------------------------------------------------------------

COLUMNS = ("measure", "fp32", "bundle", "budget", "result")


def rows(report: dict) -> list[tuple[str, ...]]:
    """The report as table rows in COLUMNS order: the monitored metric, the budget's checks, the errors."""
    metric = report["metric"]
    out = [(metric, f"{report['metrics']['fp32'][metric]:.4f}", f"{report['metrics']['bundle'][metric]:.4f}", "", "")]
    for check in report["checks"]:
        is_rise = "increase" in check["check"]
        value = f"{check['value']:+.2%}" if is_rise else (f"{check['value']:.2%}" if "agreement" in check["check"]
                                                          else f"{check['value'] * 100:.2f} pt")
        limit = (f"<= {check['limit']:.0%}" if is_rise else f">= {check['limit']:.2%}" if "agreement" in check["check"]
                 else f"<= {check['limit'] * 100:g} pt")
        out.append((check["check"], "", value, limit, "ok" if check["passed"] else "FAIL"))
    for name, stats in report["outputs"].items():
        out.append((f"{name} abs error max / mean", "", f"{stats['max_abs']:.2e} / {stats['mean_abs']:.2e}", "", ""))
    return out

