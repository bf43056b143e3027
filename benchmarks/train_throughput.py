"""Training throughput: the real data path (decoded dataset in memory -> batch -> augmentation ->
preprocessing -> step) against the same steps on pre-made float tensors.

    python benchmarks/train_throughput.py --data-root ../shared/data [--steps 30] [--json FILE]

Without --data-root the built-in samples are used. Target: real / pre-made >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from zoo import data as zdata, registry
from zoo.data.augment import augment
from zoo.training._trainer import as_dict, fit_preprocessing, make_loss, make_optimizer

MODELS = ("clouds-cnn", "omniglot-two-output")


def measure(name: str, data_root: str | None, steps: int) -> dict:
    spec = registry.get(name)
    recipe = spec.recipe
    t0 = time.perf_counter()
    folder = registry.dataset(spec.dataset).folder
    dataset = zdata.load(spec, f"{data_root}/{folder}" if data_root else None)
    decode_s = time.perf_counter() - t0
    dataset.preprocess = fit_preprocessing(dataset, torch.arange(len(dataset)))
    loss_fn = make_loss(spec, recipe)
    batch = recipe.batch_size

    def run(get_batch) -> float:
        torch.manual_seed(0)
        model = registry.build(spec).train()
        optimizer = make_optimizer(model, recipe)
        for step in range(steps + 3):  # 3 warm-up steps
            if step == 3:
                start = time.perf_counter()
            inputs, targets = get_batch(step)
            loss = loss_fn(as_dict(spec, model(*inputs.values())), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return steps * batch / (time.perf_counter() - start)

    generator = torch.Generator().manual_seed(0)

    def real(step):
        part = dataset.subset(torch.randint(len(dataset), (batch,), generator=generator))
        stored = {k: augment(recipe.augment, v) if v.dtype == torch.uint8 else v for k, v in part.inputs.items()}
        return zdata.model_inputs(dataset.preprocess, stored), part.targets

    premade_inputs = zdata.model_inputs(dataset.preprocess, dataset.subset(torch.arange(batch)).inputs)
    premade_targets = dataset.subset(torch.arange(batch)).targets

    real_rate = run(real)
    premade_rate = run(lambda step: (premade_inputs, premade_targets))
    return {"model": name, "data": "built-in" if data_root is None else folder, "samples": len(dataset),
            "decode_seconds": round(decode_s, 2), "batch": batch, "steps": steps,
            "real_samples_per_s": round(real_rate, 1), "premade_samples_per_s": round(premade_rate, 1),
            "ratio": round(real_rate / premade_rate, 3), "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = [measure(name, args.data_root, args.steps) for name in MODELS]
    for r in results:
        print(f"{r['model']:22s} real {r['real_samples_per_s']:8.1f}/s  pre-made {r['premade_samples_per_s']:8.1f}/s"
              f"  ratio {r['ratio']:.2f}  (decode {r['decode_seconds']} s for {r['samples']} samples)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
