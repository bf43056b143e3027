"""What an export did, bundle by bundle: `Outcome`s (written, or not and why, with their reports) gathered in an
`ExportResult`, which the CLI renders and `zoo bench` reads, instead of errors carrying what was written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import ParityError, PrecisionRefused, ZooError
from zoo.export._accuracy import AccuracyReport
from zoo.export._parity import Report
from zoo.export._precision import PRECISIONS


@dataclass(frozen=True)
class Outcome:
    """One bundle an export set out to write: written to `bundle`, or not (`refusal`, `reason`)."""
    model: str
    format: str
    precision: str                          # fp32 for the raw-input bundle
    raw_inputs: bool = False
    bundle: Path | None = None              # where it was written; None: not written
    exporter: dict | None = None            # the manifest's exporter record (written bundles)
    parity: Report | None = None            # ParityReport (a raw-input bundle's: RawParityReport, vs zoo.runtime)
    accuracy: AccuracyReport | None = None  # a reduced precision's
    refusal: type[ZooError] | None = None   # ParityError (parity, its own test vectors) or PrecisionRefused
    reason: str = ""                        # why not, as the refusal says it (a failed parity: with its table)

    @property
    def passed(self) -> bool:
        return self.bundle is not None

    @property
    def parity_failed(self) -> bool:
        return self.parity is not None and not self.parity.passed

    @property
    def title(self) -> str:
        """`<model> <format>[ <precision>][ raw inputs]`, as tables and lines name it."""
        return (f"{self.model} {self.format}" + ("" if self.precision == "fp32" else f" {self.precision}")
                + (" raw inputs" if self.raw_inputs else ""))

    def to_dict(self) -> dict:
        """The JSON `zoo export --json` prints for it; `reason` is null where the parity report says why."""
        return {"model": self.model, "format": self.format, "precision": self.precision,
                "raw_inputs": self.raw_inputs, "bundle": None if self.bundle is None else str(self.bundle),
                "passed": self.passed, "exporter": self.exporter, "parity": _dict(self.parity),
                "accuracy": _dict(self.accuracy), "reason": None if self.passed or self.parity_failed else self.reason}


def _dict(report) -> dict | None:
    return None if report is None else report.to_dict()


@dataclass(frozen=True)
class Repository:
    """A model added to a Triton model repository from its ONNX bundle (`zoo export --format triton`)."""
    model: str
    folder: Path                            # the repository
    models: list[Path]                      # the model folders written in it

    def to_dict(self) -> dict:
        return {"format": "triton", "repository": str(self.folder), "model": self.model,
                "models": [str(m) for m in self.models]}


@dataclass
class ExportResult(Sequence):
    """What an export did: an Outcome per bundle it set out to write, `notes` for the user (files kept from a
    replaced bundle, bundles beside of other weights) and Triton repositories. As a sequence, the bundle
    folders written, in order (`(bundle,) = export(...)`)."""
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repositories: list[Repository] = field(default_factory=list)

    @property
    def bundles(self) -> list[Path]:
        return [o.bundle for o in self.outcomes if o.passed]

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def __getitem__(self, index):
        return self.bundles[index]

    def __len__(self) -> int:
        return len(self.bundles)

    def extend(self, other: "ExportResult") -> None:
        self.outcomes += other.outcomes
        self.notes += other.notes
        self.repositories += other.repositories

    def sorted(self) -> list[Outcome]:
        """The outcomes by model, format, raw inputs last, precision in PRECISIONS order."""
        order = {p: i for i, p in enumerate(PRECISIONS)}
        return sorted(self.outcomes, key=lambda o: (o.model, o.format, o.raw_inputs, order[o.precision]))

    def error(self, brief: bool = False) -> ZooError | None:
        """The bundles not written, as one error (None when every one was): ParityError when one failed parity
        or its own test vectors, else PrecisionRefused. `brief`: one line for a caller that has shown each
        outcome already; else every reason in full (parity tables included)."""
        refused = self.refused
        if not refused:
            return None
        kind = ParityError if any(o.refusal is ParityError for o in refused) else PrecisionRefused
        if not brief:
            return kind("\n\n".join(o.reason for o in refused))
        if kind is ParityError:
            failed = ", ".join(o.title for o in refused if o.refusal is ParityError)
            return ParityError(f"parity failed for {failed}: no bundle written for it")
        if len(refused) == 1:
            return PrecisionRefused(refused[0].reason)
        return PrecisionRefused(f"{len(refused)} bundles not written: "
                                + "; ".join(f"{o.model} {o.precision}" for o in refused) + " (reasons above)")


@dataclass
class Verification:
    """What `verify` found in a bundle: its checks, the parity re-run against the source weights, a reduced
    precision's accuracy, its test vectors; `refusal` and `reason` when parity or the accuracy budget failed."""
    bundle: str
    model: str
    format: str
    precision: str
    raw_inputs: bool
    file_sha256: str
    checks: list[dict]                      # the manifest against the model file's own inputs and outputs
    weights: str | None = None              # the source weights file parity was re-run against
    parity: Report | None = None
    accuracy: AccuracyReport | None = None
    test_data: dict | None = None           # the test vectors (and golden cases) reproduced
    web: dict | None = None                 # a web folder's page and onnxruntime-web files checked
    notes: list[str] = field(default_factory=list)
    refusal: type[ZooError] | None = None   # ParityError or PrecisionRefused
    reason: str = ""                        # why, in full (a failed parity: with its table)

    @property
    def passed(self) -> bool:
        return self.refusal is None

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes) or None

    def error(self) -> ZooError | None:
        return None if self.refusal is None else self.refusal(self.reason)

    def to_dict(self) -> dict:
        """The JSON `zoo verify --json` prints."""
        return {"bundle": self.bundle, "model": self.model, "format": self.format, "precision": self.precision,
                "raw_inputs": self.raw_inputs, "file_sha256": self.file_sha256, "checks": self.checks,
                "weights": self.weights, "parity": _dict(self.parity), "accuracy": _dict(self.accuracy),
                "test_data": self.test_data, "web": self.web, "note": self.note, "passed": self.passed}
