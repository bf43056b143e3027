"""Parity of a raw-input bundle against zoo.runtime: the same raw inputs (image files of several sizes and
aspect ratios, CSV rows, series, category names) through the bundle's own graph, and through the runtime's
preprocessing (Pillow and numpy, `zoo.contract`) feeding the fp32 network, both loaded with `zoo.runtime`.

Budgets. Everything but the image resize is the same arithmetic in the graph as in the runtime, so models
without image inputs are held to the fp32 parity tolerance on every output. ONNX's Resize is not Pillow's
(about 1 % of the resized values differ by one or two levels, see `_raw.RESIZE`): image classifiers are held
to MAX_PROBABILITY_DIFFERENCE on every class probability, 3.5x the largest difference measured over the 17
image models on 120 real photos of 13 sizes (5.7e-3, cifar2-netbatchnorm; benchmarks/RESULTS.md), and a top-1
class may differ only in a near tie (the reference's two most likely classes within NEAR_TIE), which that
budget implies anyway: a fixed share of agreeing samples means little over a few dozen samples.
"""

from __future__ import annotations

import numpy as np

from zoo.export import _parity

MAX_PROBABILITY_DIFFERENCE = 0.02
NEAR_TIE = 2 * MAX_PROBABILITY_DIFFERENCE


def _runs(spec, samples) -> list[tuple[list, dict]]:
    """(samples, raw inputs) per call: every sample in one call (the runtime runs each image size as its own
    batch), except series, which the runtime takes one at a time."""
    if spec.is_sequence:
        return [([s], dict(s.inputs)) for s in samples]
    return [(samples, {name: [s.inputs[name] for s in samples] for name in samples[0].inputs})]


def _compare(spec, reference, session, samples, raw) -> list[dict]:
    ref, got = reference.predict_raw(raw), session.predict_raw(raw)
    probs = (reference.probabilities(ref), session.probabilities(got)) if spec.is_classifier else None
    cases = []
    for i, sample in enumerate(samples):
        case = {"input": sample.label, "outputs": {}}
        for t in spec.outputs:
            a, b = ref[t.name][i].astype(np.float64), got[t.name][i].astype(np.float64)
            case["outputs"][t.name] = {"max_abs": float(np.abs(a - b).max()),
                                       "within_tolerance": bool(np.all(np.abs(a - b) <= spec.atol + spec.rtol * np.abs(a)))}
            if probs is not None and t.name in probs[0]:
                p, q = probs[0][t.name][i], probs[1][t.name][i]
                top = np.sort(p)[::-1]
                case["outputs"][t.name].update(
                    max_probability_difference=float(np.abs(p - q).max()), top1_agrees=bool(p.argmax() == q.argmax()),
                    reference_margin=float(top[0] - top[1]))
        cases.append(case)
    return cases


def measure(spec, reference, session, samples, about: dict) -> dict:
    """The raw-input bundle `session` against `reference` (the fp32 network with the runtime's preprocessing),
    both `zoo.runtime` Sessions, on `samples` (zoo.data.raw)."""
    images = any(pre.kind == "image" for pre in reference.manifest.preprocess.values())
    judged = "probabilities" if images and spec.is_classifier else "outputs"
    report = {"reference": "zoo.runtime: the manifest's preprocessing (zoo.contract: Pillow, numpy) feeding the fp32 "
                           "network", "backend": _parity.backend_label(session), "samples": dict(about, count=len(samples)),
              "budget": ({"max_probability_difference": MAX_PROBABILITY_DIFFERENCE, "top1": f"may differ only where "
                          f"the reference's two most likely classes are within {NEAR_TIE:g}"} if judged == "probabilities"
                         else {"atol": spec.atol, "rtol": spec.rtol,
                               "rule": "|raw - reference| <= atol + rtol * |reference|, element-wise"}),
              "checks": _parity.check_structure(session.signature(), session.manifest.data["inputs"],
                                                session.manifest.data["outputs"]),
              "cases": [], "failures": []}
    report["failures"] += [f"{c['check']}: {c['detail']}" for c in report["checks"] if c["passed"] is False]
    for group, raw in _runs(spec, samples):
        try:
            report["cases"] += _compare(spec, reference, session, group, raw)
        except Exception as e:  # noqa: BLE001 - a graph that fails to run is a failed check, reported
            report["failures"].append(f"{group[0].label}: the raw-input model failed to run: {' '.join(str(e).split())[:300]}")
    summary = {}
    for t in spec.outputs:
        rows = [c["outputs"][t.name] for c in report["cases"]]
        if not rows:
            continue
        entry = summary[t.name] = {"max_abs": max(r["max_abs"] for r in rows)}
        if "top1_agrees" in rows[0]:
            entry.update(top1_agreement=float(np.mean([r["top1_agrees"] for r in rows])),
                         max_probability_difference=max(r["max_probability_difference"] for r in rows))
        for case, r in zip(report["cases"], rows):
            report["failures"] += _judge(judged, t.name, case["input"], r)
    report["worst"] = summary
    report["passed"] = not report["failures"]
    return report


def _judge(judged: str, output: str, label: str, r: dict) -> list[str]:
    if judged == "outputs":
        return [] if r["within_tolerance"] else [f"{label}: {output} differs by {r['max_abs']:.3g}, beyond the tolerance"]
    out = []
    if r["max_probability_difference"] > MAX_PROBABILITY_DIFFERENCE:
        out.append(f"{label}: a probability of {output} differs by {r['max_probability_difference']:.3g} "
                   f"(budget {MAX_PROBABILITY_DIFFERENCE:g})")
    if not r["top1_agrees"] and r["reference_margin"] > NEAR_TIE:
        out.append(f"{label}: the top {output} class differs although the reference's margin is "
                   f"{r['reference_margin']:.3g} (> {NEAR_TIE:g})")
    return out


COLUMNS = ("output", "samples", "top-1 agreement", "max prob diff", "max abs", "result")


def rows(report: dict) -> list[tuple[str, ...]]:
    count = len(report["cases"])
    return [(name, str(count), f"{s['top1_agreement']:.1%}" if "top1_agreement" in s else "-",
             f"{s['max_probability_difference']:.2e}" if "max_probability_difference" in s else "-",
             f"{s['max_abs']:.2e}", "ok" if report["passed"] else "FAIL") for name, s in report["worst"].items()]


def text(report: dict, title: str) -> str:
    lines = [title, f"reference: {report['reference']}; budget {report['budget']}"]
    lines += ["  " + "  ".join(r) for r in [COLUMNS, *rows(report)]]
    lines += [f"  - {f}" for f in report["failures"]]
    return "\n".join(lines)
