"""Parity between eager PyTorch and an exported bundle as users run it (a `zoo.runtime` Session), as a report.

Checks run in a fixed order: names, symbolic dims, then per input shape the output shapes and
values. Every failure is collected; nothing stops at the first one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

BATCHES = (1, 2, 7)
SEQUENCES = (1, 5, 96, 200)
SEED = 0
RULE = "|bundle - eager| <= atol + rtol * |eager|, element-wise"


@dataclass
class Report:
    """What every parity report holds (as a manifest's `parity` records it, `to_dict`): the model file's inputs
    and outputs checked against the manifest, the cases run, every failure and, per output, the worst errors."""
    backend: str                                       # what ran the bundle: zoo.runtime's backend and providers
    checks: list[dict] = field(default_factory=list)   # {"check", "passed" (None: not kept by the format), "detail"}
    cases: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    worst: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def judges_values(self) -> bool:
        """Whether the output values are judged here (else only the structure, shapes and finiteness)."""
        return True

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclass
class ParityReport(Report):
    """The bundle against eager PyTorch on the case matrix (`cases`): per case and output the errors
    (`_compare`), judged element-wise by `tolerance`, or not judged (None: a reduced precision)."""
    tolerance: dict | None = None                      # {"atol", "rtol", "rule"}
    seed: int = SEED

    @property
    def judges_values(self) -> bool:
        return self.tolerance is not None


def recorded_tolerance(record, atol: float, rtol: float) -> tuple[float, float]:
    """(atol, rtol) a bundle's recorded parity report (its manifest's `parity`) judged by; `atol` and `rtol`
    where it records none."""
    tolerance = (record.get("tolerance") if isinstance(record, dict) else None) or {}
    return tolerance.get("atol", atol), tolerance.get("rtol", rtol)


# --- inputs ---------------------------------------------------------------------------------------

def cases(signature, real: dict | None) -> list[tuple[str, dict]]:
    """(label, inputs by name) for every case of the matrix (`Signature.random_inputs`, seeded), then the real
    samples when given."""
    rng = np.random.default_rng(SEED)
    out = []
    for sequence in (SEQUENCES if signature.is_sequence else (None,)):
        for batch in BATCHES:
            out.append(("random", signature.random_inputs(batch, sequence, rng)))
    if real:
        out.append(("real", {t.name: np.ascontiguousarray(real[t.name], dtype=np.float32) for t in signature.inputs}))
    return out


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


# --- checks ---------------------------------------------------------------------------------------

def check_structure(described: dict, inputs: list[dict], outputs: list[dict]) -> list[dict]:
    """Compare the model file's own view of its inputs/outputs with the declared ones (manifest dicts):
    first the names (outputs first), then the dims (declared dynamic axes must be symbolic)."""
    names, dims = [], []
    for side, declared in (("output", outputs), ("input", inputs)):
        got = described[f"{side}s"]
        want = [t["name"] for t in declared]
        if got is None:
            names.append({"check": f"{side} names", "passed": None, "detail": "not kept by this format"})
            continue
        have = [g["name"] for g in got]
        if len(got) != len(want):
            names.append({"check": f"{side} names", "passed": False,
                          "detail": f"the model file has {len(got)} {side}s, the manifest declares {want}"})
            continue
        if any(h is not None for h in have) and have != want:
            names.append({"check": f"{side} names", "passed": False,
                          "detail": f"the model file has {have}, the manifest declares {want}"})
        else:
            names.append({"check": f"{side} names", "passed": True,
                          "detail": ", ".join(want) + ("" if any(have) else " (by position)")})
        problems, symbolic = [], []
        for g, t in zip(got, declared):
            if g["shape"] is None:
                continue
            if len(g["shape"]) != len(t["shape"]):
                problems.append(f"{t['name']} has rank {len(g['shape'])} in the model file, {len(t['shape'])} declared")
                continue
            for axis, (h, w) in enumerate(zip(g["shape"], t["shape"])):
                if isinstance(w, str) and not isinstance(h, str):
                    problems.append(f"{t['name']} axis {axis} ({w}) is fixed at {h} in the model file")
                elif isinstance(w, str):
                    symbolic.append(f"{t['name']}[{axis}]")
                elif h != w:
                    problems.append(f"{t['name']} axis {axis} is {h} in the model file, {w} declared")
        if not any(g["shape"] is not None for g in got):
            dims.append({"check": f"{side} dims", "passed": None, "detail": "not kept by this format"})
        else:
            dims.append({"check": f"{side} dims", "passed": not problems,
                         "detail": "; ".join(problems) or "symbolic: " + (", ".join(symbolic) or "none")})
    return names + dims


def _compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, top1=None, judge: bool = True) -> dict:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    diff = np.where(np.isnan(ref64) & np.isnan(got64), 0.0, diff)   # NaN in both is agreement
    # relative error with |reference| floored at atol, so outputs near 0 don't report huge ratios
    rel = diff / np.maximum(np.abs(ref64), max(atol, 1e-12))
    if judge:
        ok = bool(np.all(diff <= atol + rtol * np.abs(ref64)))       # element-wise, as np.allclose
    else:   # reduced precision: values differ by design; only a non-finite value where eager has none fails
        ok = bool(np.all(np.isfinite(got64) | ~np.isfinite(ref64)))
    stats = {"max_abs": float(np.max(diff)), "mean_abs": float(np.mean(diff)),
             "p99_abs": float(np.percentile(diff, 99)), "max_rel": float(np.max(rel)),
             "mean_rel": float(np.mean(rel)), "p99_rel": float(np.percentile(rel, 99)), "passed": ok}
    if top1 is not None:
        stats["top1_agreement"] = float(np.mean(top1(ref) == top1(got)))
    return stats


def eager(model, arrays: dict) -> list:
    import torch

    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in arrays.values()))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def backend_label(session) -> str:
    return f"zoo.runtime {session.backend} on {', '.join(session.providers)} ({session.threads} threads)"


def measure(signature, model, session, atol: float, rtol: float, real: dict | None = None,
            judge: bool = True) -> ParityReport:
    """The parity report of a loaded bundle (`session`, as `zoo.runtime.load` gives it) against eager `model`, whose
    contract is `signature` (its fitted preprocessing makes the inputs).
    `judge=False` (reduced precisions, which differ from eager by design and are judged by their accuracy
    report): the structure, the output shapes and finite values are checked, the errors only reported."""
    if model.training:
        raise AssertionError("parity must compare against the model in eval mode")
    declared = {"inputs": [t.to_dict() for t in signature.inputs], "outputs": [t.to_dict() for t in signature.outputs]}
    report = ParityReport(backend_label(session), check_structure(session.file_io(), declared["inputs"],
                                                                  declared["outputs"]),
                          tolerance={"atol": atol, "rtol": rtol, "rule": RULE} if judge else None)
    report.failures += [f"{c['check']}: {c['detail']}" for c in report.checks if c["passed"] is False]

    top1 = signature.top1 if signature.is_classifier else None
    for kind, arrays in cases(signature, real):
        label = f"{kind} " + ", ".join(shape_text(a.shape) for a in arrays.values())
        case = {"inputs": kind, "shapes": {name: list(a.shape) for name, a in arrays.items()},
                "outputs": {}, "error": None}
        report.cases.append(case)
        reference = eager(model, arrays)
        try:
            produced = session.predict(arrays)
        except Exception as e:  # noqa: BLE001 - any backend error is a failed case, reported
            case["error"] = " ".join(str(e).split())[:300]
            report.failures.append(f"{label}: the bundle failed to run: {case['error']}")
            continue
        for t, ref in zip(signature.outputs, reference):
            got = np.asarray(produced[t.name])
            if got.shape != ref.shape:
                case["outputs"][t.name] = {"shape": list(got.shape), "passed": False,
                                           "error": f"shape {shape_text(got.shape)}, eager {shape_text(ref.shape)}"}
                report.failures.append(f"{label}: {t.name} {case['outputs'][t.name]['error']}")
                continue
            stats = _compare(ref, got, atol, rtol, top1, judge)
            case["outputs"][t.name] = {"shape": list(got.shape), **stats}
            if not stats["passed"] and not judge:
                report.failures.append(f"{label}: {t.name} has NaN or infinite values where eager has none")
            elif not stats["passed"]:
                report.failures.append(f"{label}: {t.name} max abs error {stats['max_abs']:.3g} "
                                          f"(max rel {stats['max_rel']:.3g}) exceeds atol {atol:g} + rtol {rtol:g}")
    report.worst = {t.name: {k: max((c["outputs"][t.name].get(k, 0.0) for c in report.cases
                                     if t.name in c["outputs"]), default=None)
                             for k in ("max_abs", "max_rel")} for t in signature.outputs}
    return report


# --- rendering ------------------------------------------------------------------------------------

COLUMNS = ("inputs", "output", "max abs", "mean abs", "p99 abs", "max rel", "p99 rel", "top-1", "result")


def tolerance_text(report: ParityReport) -> str:
    tol = report.tolerance
    if tol is None:
        return "values not judged by tolerance (reduced precision: the accuracy report judges it)"
    return f"tolerance atol {tol['atol']:g}, rtol {tol['rtol']:g}"


def rows(report: ParityReport) -> list[tuple[str, ...]]:
    """One row per case and output, in COLUMNS order (the CLI renders them with rich)."""
    out = []
    for case in report.cases:
        label = f"{case['inputs']} " + ", ".join(shape_text(s) for s in case["shapes"].values())
        if case["error"]:
            out.append((label, "-", "", "", "", "", "", "", "FAIL: " + case["error"][:80]))
            continue
        for name, s in case["outputs"].items():
            if "max_abs" not in s:
                out.append((label, name, "", "", "", "", "", "", "FAIL: " + s["error"]))
                continue
            top1 = f"{s['top1_agreement']:.0%}" if "top1_agreement" in s else "-"
            out.append((label, name, *(f"{s[k]:.2e}" for k in ("max_abs", "mean_abs", "p99_abs", "max_rel", "p99_rel")),
                        top1, "ok" if s["passed"] else "FAIL"))
    return out


def text_table(report: ParityReport, title: str = "") -> str:
    """The report as plain text: structural checks, the per-case table, then the failures."""
    lines = [title] if title else []
    lines.append(f"backend {report.backend}; {tolerance_text(report)}")
    for c in report.checks:
        status = {True: "ok", False: "FAIL", None: "n/a"}[c["passed"]]
        lines.append(f"  {c['check']:<13} {status:<4} {c['detail']}")
    table = [COLUMNS, *rows(report)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    if report.failures:
        lines.append(f"{len(report.failures)} failed:")
        lines += [f"  - {f}" for f in report.failures]
    return "\n".join(lines)
