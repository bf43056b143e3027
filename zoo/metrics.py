"""A model's metrics, for training and for export (which measures reduced precisions with them): torchmetrics
for every head, classification (accuracy, precision/recall/F1 micro+macro+per class, confusion matrix, the
classes from the Signature's top-1) and regression (MSE, RMSE, MAE, R², plus the persistence forecast for series
and the training median for other regressors)."""

from __future__ import annotations

import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score
from torchmetrics.classification import (MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score,
                                         MulticlassPrecision, MulticlassRecall)

from zoo.specs import ModelSpec

PER_CLASS_LIMIT = 30  # per-class figures and confusion matrices only for heads this small


def _classification(num_classes: int) -> MetricCollection:
    metrics = {"accuracy": MulticlassAccuracy(num_classes, average="micro")}
    for average in ("micro", "macro"):
        metrics[f"precision_{average}"] = MulticlassPrecision(num_classes, average=average)
        metrics[f"recall_{average}"] = MulticlassRecall(num_classes, average=average)
        metrics[f"f1_{average}"] = MulticlassF1Score(num_classes, average=average)
    if num_classes <= PER_CLASS_LIMIT:
        metrics["precision_per_class"] = MulticlassPrecision(num_classes, average=None)
        metrics["recall_per_class"] = MulticlassRecall(num_classes, average=None)
        metrics["f1_per_class"] = MulticlassF1Score(num_classes, average=None)
        metrics["confusion_matrix"] = MulticlassConfusionMatrix(num_classes)
    return MetricCollection(metrics)


class Metrics:
    """Accumulates every metric of a spec over batches; `compute()` gives a flat dict of floats
    (lists for per-class figures and confusion matrices). Names are prefixed by the head only
    when the model has several heads (omniglot-two-output: alphabet_accuracy, character_accuracy)."""

    def __init__(self, spec: ModelSpec, baselines: dict[str, float] | None = None):
        self.spec = spec
        self.baselines = baselines or {}   # output name -> a constant prediction to compare with
        self.heads: dict[str, MetricCollection] = {}
        for out in spec.outputs:
            if spec.is_classifier:
                self.heads[out.name] = _classification(len(spec.labels[out.name]))
            else:
                self.heads[out.name] = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(),
                                                         "r2": R2Score()})
        self.baseline_mae = {name: MeanAbsoluteError() for name in self.baselines}
        self.persistence = (MetricCollection({"persistence_mse": MeanSquaredError(),
                                              "persistence_mae": MeanAbsoluteError()})
                            if spec.is_sequence else None)

    @torch.no_grad()
    def update(self, outputs: dict, targets: dict, inputs: dict) -> None:
        for name, collection in self.heads.items():
            target = targets[name]
            if self.spec.is_classifier:
                collection.update(self.spec.signature.top1(outputs[name]).long(), target.long().view(-1))
            else:
                collection.update(outputs[name], target)
        for name, metric in self.baseline_mae.items():
            metric.update(torch.full_like(targets[name], self.baselines[name]), targets[name])
        if self.persistence is not None:
            (series,) = inputs.values()
            self.persistence.update(series[:, -1, :], next(iter(targets.values())))

    def compute(self) -> dict:
        result = {}
        prefix = len(self.heads) > 1
        for name, collection in self.heads.items():
            for key, value in collection.compute().items():
                result[f"{name}_{key}" if prefix else key] = value.tolist() if value.ndim else float(value)
            if not self.spec.is_classifier:
                result[f"{name}_rmse" if prefix else "rmse"] = result[f"{name}_mse" if prefix else "mse"] ** 0.5
        for name, metric in self.baseline_mae.items():
            result[f"{name}_median_mae" if prefix else "median_mae"] = float(metric.compute())
        if self.persistence is not None:
            result.update({k: float(v) for k, v in self.persistence.compute().items()})
            result["skill_vs_persistence"] = 1 - result["mse"] / result["persistence_mse"]
        return result


def scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def lower_is_better(metric: str) -> bool:
    return metric.endswith(("mse", "mae", "loss"))
