"""The `zoo` command: thin Typer commands that call library functions and render with rich."""

from __future__ import annotations

import builtins
import functools
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

import zoo
import zoo.runtime
from zoo import bench as zbench, registry
from zoo.doctor import diagnose
from zoo.errors import ParityError, ZooError, interrupted
from zoo.export import (ACCURACY_COLUMNS, PARITY_COLUMNS, PRECISIONS, RAW_PARITY_COLUMNS, Budget, accuracy_rows,
                        bundle_for, export_models, parity_rows, raw_parity_rows, verify as verify_bundle)
from zoo.outputs import writable_file, write_json
from zoo.runs import SORTS, plot_runs, read_runs, sort_runs
from zoo.weights import headline, preprocessing, read_card, weights_dir


class _FlagsWithoutType:
    """Typer shows every flag as `--flag <bool>`, as if it took a value: a flag gets no type column."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class _Command(_FlagsWithoutType, TyperCommand):
    pass


class _Group(_FlagsWithoutType, TyperGroup):
    pass


class _ErrConsole(Console):
    """stderr, remembering whether "interrupted" was said: the trainer says it (naming its checkpoint) before
    the command's own handler would, and a second Ctrl-C during exit would say it again."""

    said_interrupted = False

    def print(self, *objects, **kwargs):
        if objects and str(objects[0]).startswith("interrupted"):
            self.said_interrupted = True
        super().print(*objects, **kwargs)


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, cls=_Group,
                  help="The classic PyTorch course models: train, export with parity, predict, serve, bench.")
console = Console()
err_console = _ErrConsole(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
TrustCodeFlag = Annotated[bool, typer.Option("--trust-code", help="Load TorchScript / pt2 bundles, whose files can "
                                             "run any code when loaded: only bundles from a maker you trust.")]
TrustedKeys = Annotated[builtins.list[str] | None, typer.Option(
    "--trusted-key", metavar="PUB", help="Public key file (zoo keygen); refuse bundles not signed by it (repeat for "
                                         "several keys).")]
AMP_HELP = ("Mixed precision: bfloat16 autocast on CPU, float16 with a gradient scaler on CUDA; the weights and "
            "the exported bundles stay float32. Off by default: on this project's CPU (with AVX-512 bfloat16) it made "
            "cifar2-netresdeep's and food10-mobilenetv2's epochs 1.8-2x faster but not clouds-cnn's, at validation "
            "accuracy 0-0.7 points lower, and on a CPU without bfloat16 instructions it is 8-12x slower "
            "(benchmarks/RESULTS.md).")


# modules only an extra installs: a command that needs one says how to get it
EXTRAS = {**dict.fromkeys(("torch", "torchvision", "torchmetrics", "safetensors", "onnx", "onnxscript",
                            "onnxconverter_common", "matplotlib"),
                          ("train", "the training extra")),
          **dict.fromkeys(("starlette", "uvicorn", "prometheus_client", "multipart", "python_multipart", "grpc",
                           "tritonclient"),
                          ("serve", "the serving extra"))}


def command(fn):
    """Register a command whose ZooErrors (and OSErrors naming a path: a name too long, a folder that cannot
    be read) become one clear line on stderr and a non-zero exit, and whose Ctrl-C, however a library
    wrapped it, is "interrupted" and exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err_console.said_interrupted = False   # per command (tests run many in one process)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise typer.Exit(_interrupted()) from None
        except Exception as e:
            if interrupted(e):
                raise typer.Exit(_interrupted()) from None
            if isinstance(e, ZooError):
                err_console.print(f"[bold red]error:[/] {printable(str(e))}", highlight=False, soft_wrap=True)
                raise typer.Exit(e.exit_code) from None
            if isinstance(e, OSError) and e.filename is not None:   # a path the system refuses: too long, ...
                err_console.print(f"[bold red]error:[/] {printable(f'{e.filename}: {e.strerror or e}')}",
                                  highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] in EXTRAS:
                extra, what = EXTRAS[e.name.split(".")[0]]
                err_console.print("[bold red]error:[/] " + printable(
                    f"`zoo {fn.__name__.rstrip('_')}` needs {what} ({e.name} is not installed): "
                    f"pip install 'zoo[{extra}]' (or, in a checkout, pip install -e '.[{extra}]')"), highlight=False,
                    soft_wrap=True)
                raise typer.Exit(2) from None
            raise

    return app.command(cls=_Command)(wrapper)


def _interrupted() -> int:
    """Say so (once) and give exit status 130. CPython marks a Ctrl-C that passed through exec()/eval() of a
    string (under torch.export, sympy's parser and torch.fx do) as never handled and kills the process with
    SIGINT at exit, even after it was caught; running any string clears that mark."""
    if not err_console.said_interrupted:
        err_console.print("interrupted")
    exec("None")
    return 130


# characters that would reach the terminal as commands (colour, cursor moves, title changes, a bell) or
# reorder what is shown (bidirectional overrides); newlines and tabs are kept
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(text) -> str:
    """A string from outside (a file name, a CSV value, a label from a manifest, an error naming them) with
    its control characters shown as \\xNN instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                        str(text))


def printable(text) -> str:
    """`plain(text)` with its rich markup escaped: what goes into rich's print and tables."""
    return escape(plain(text))


def _show_version(value: bool) -> None:
    if value:
        print(f"zoo {zoo.__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    pass   # the app's options; its help is the Typer's


def _check_early(name: str | None = None, data: str | None = None, weights: str | None = None,
                 inputs: builtins.list[str] = ()) -> None:
    """What can be checked without torch, checked before a command imports it (seconds): an unknown model
    name or a missing path is one line at once, in the words the library would use."""
    if name is not None:
        registry.get(name)
    if data is not None and not Path(data).expanduser().exists():
        raise ZooError(f"--data {data}: no such file or folder")
    if weights is not None and not Path(weights).is_file():
        raise ZooError(f"weights file {weights} does not exist")
    for item in inputs:
        if not Path(item).exists():
            raise ZooError(f"input file {item} does not exist")


def print_json(data) -> None:
    # plain print: rich would wrap long lines and break the JSON for scripts
    print(json.dumps(data, indent=2, default=str))


_COURSE_TAGS = {"Intermediate": "DataCamp", "Blitz": "blitz", "fast.ai": "fast.ai", "Stevens": "DLwPT book",
                "fundamentals": "fundamentals"}


def _short_course(course: str) -> str:
    return next((tag for key, tag in _COURSE_TAGS.items() if key in course), course)


@command
def list(json_: JsonFlag = False):  # noqa: A001 - the command is called `list`
    """List every model in the zoo."""
    rows = []
    for spec in registry.specs():
        card = read_card(spec.name)
        rows.append({"name": spec.name, "course": spec.course, "task": spec.task, "io": spec.summary_io(),
                     "params": spec.params, "dataset": spec.dataset,
                     "weights": headline(card) if card else None})
    if json_:
        return print_json(rows)
    table = Table(title=f"zoo: {len(rows)} course models")
    table.add_column("name", no_wrap=True)
    for col in ("course", "task", "input -> output", "params", "weights (val)"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        table.add_row(r["name"], _short_course(r["course"]), r["task"], r["io"], f"{r['params']:,}",
                      r["weights"] or "[dim]none[/]")
    console.print(table)


@command
def info(name: Annotated[str, typer.Argument(help="Model name, e.g. clouds-cnn.")], json_: JsonFlag = False):
    """Show a model's whole spec: architecture, what it takes (units, ranges), labels, recipe, weights."""
    spec = registry.get(name)
    card = read_card(spec.name)
    # the shipped weights' own preprocessing (fitted statistics, training ranges), else the spec's
    fitted = preprocessing(spec, card) if card else spec.preprocess
    data = spec.to_dict()
    data["preprocess"] = {key: pre.to_dict() for key, pre in fitted.items()}
    data["inputs_described"] = {key: pre.describe() for key, pre in fitted.items()}
    data["dataset_source"] = registry.dataset(spec.dataset).source
    data["dataset_caveat"] = registry.dataset(spec.dataset).caveat
    data["weights"] = card.data if card else None
    if json_:
        return print_json(data)
    table = Table(show_header=False, title=spec.name, title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def labels_text(values):
        return ", ".join(values) if len(values) <= 12 else f"{', '.join(values[:6])}, … ({len(values)} in all)"

    table.add_row("course", spec.course)
    table.add_row("task", spec.task)
    table.add_row("architecture", spec.description)
    table.add_row("params", f"{spec.params:,}")
    for t in spec.inputs:
        table.add_row(f"input {t.name}", f"{tuple(t.shape)} {t.dtype}: {printable(fitted[t.name].describe())}")
    for t in spec.outputs:
        table.add_row(f"output {t.name}", f"{tuple(t.shape)} {t.dtype} ({spec.output_kind})")
    for key, values in spec.labels.items():
        table.add_row(f"labels {key}", labels_text(values))
    table.add_row("dataset", f"{spec.dataset}: {printable(data['dataset_source'])}")
    if data["dataset_caveat"]:
        table.add_row("[yellow]about the data[/]", printable(data["dataset_caveat"]))
    table.add_row("recipe", ", ".join(f"{k}={v}" for k, v in data["recipe"].items()))
    table.add_row("course result", spec.course_result)
    if card and card.caveat:
        table.add_row("[yellow]caveat[/]", printable(card.caveat))
    if card:
        for split, values in card.metrics.items():
            table.add_row(f"weights: {split}", ", ".join(f"{k}={v:.4g}" for k, v in values.items()
                                                         if isinstance(v, (int, float))))
        table.add_row("weights: sha256", card.sha256 or "?")
    else:
        table.add_row("weights", "none shipped yet (train with `zoo train " + spec.name + "`)")
    console.print(table)


# zoo train's longer options, named here so that the command's signature stays readable
Resume = Annotated[bool, typer.Option(help="Continue the interrupted run whose checkpoint is in --out (a run that "
                                           "finished with the same recipe and data is not repeated).")]
Restart = Annotated[bool, typer.Option(help="Discard the checkpoint of an interrupted run in --out and train from the "
                                            "start (without --resume or --restart, a checkpoint there is refused).")]
Schedule = Annotated[Literal[registry.SCHEDULES] | None, typer.Option(
    "--schedule", help="Learning-rate schedule: cosine and onecycle step every batch; plateau multiplies the rate by "
                       "--plateau-factor when the monitored validation metric has not improved for --plateau-patience "
                       "epochs (early stopping and the best epoch's weights stay as they are).",
    show_default="the recipe's")]
PlateauPatience = Annotated[int | None, typer.Option(min=0, help="With --schedule plateau: epochs without improvement "
                                                     "before the rate falls.", show_default="the recipe's, 2")]
PlateauFactor = Annotated[float | None, typer.Option(help="With --schedule plateau: what the rate is multiplied by.",
                                                     show_default="the recipe's, 0.2")]
Amp = Annotated[bool, typer.Option("--amp", help=AMP_HELP)]
Pretrained = Annotated[str | None, typer.Option(help="The file (or folder) of the pretrained weights a transfer-"
                                                     "learning recipe starts from.",
                                                show_default="looked for in $ZOO_PRETRAINED, <data-root>/pretrained, "
                                                             "the cache")]
Nproc = Annotated[int | None, typer.Option(min=1, help="Data-parallel training: processes on this machine, launched "
                                                       "with torchrun (DDP; gloo on CPU, nccl on CUDA).",
                                           show_default="one process, no torchrun")]
Nnodes = Annotated[int, typer.Option(min=1, help="With --nproc: machines taking part (torchrun --nnodes).")]
NodeRank = Annotated[int, typer.Option(min=0, help="With --nproc: this machine's index (torchrun --node-rank).")]
MasterAddr = Annotated[str | None, typer.Option(help="With --nproc: the address of node 0 (torchrun --master-addr).",
                                                show_default="this machine, one node")]
MasterPort = Annotated[int, typer.Option(help="With --nproc: node 0's port (torchrun --master-port).")]


@command
def train(
    name: Annotated[str | None, typer.Argument(help="Model name (or --all).")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset folder or file in its real format.",
                                             show_default="the built-in sample")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder for weights, card, history and plots; the shipped "
                                            "weights are replaced only with --replace-shipped.",
                                            show_default="runs/")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the recipe's epochs.",
                                               show_default="the recipe's")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the recipe's batch size.",
                                                   show_default="the recipe's")] = None,
    lr: Annotated[float | None, typer.Option(help="Override the recipe's learning rate (`zoo lr-find NAME` suggests "
                                                  "one).", show_default="the recipe's")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the recipe's seed.", show_default="the recipe's")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="Override the fine-tuning epochs of a transfer-learning "
                                                        "recipe (after --epochs with the backbone frozen).",
                                                        show_default="the recipe's")] = None,
    schedule: Schedule = None,
    plateau_patience: PlateauPatience = None,
    plateau_factor: PlateauFactor = None,
    amp: Amp = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Resume = False,
    restart: Restart = False,
    replace_shipped: Annotated[bool, typer.Option("--replace-shipped", help="Write into the shipped weights folder "
                                                  "(weights/), replacing the model's shipped weights.")] = False,
    force: Annotated[bool, typer.Option(help="Replace real-data weights with built-in-sample ones.")] = False,
    strict: Annotated[bool, typer.Option(help="Stop at an unreadable image instead of skipping it (skipped files "
                                         "are counted and listed in the card).")] = False,
    pretrained: Pretrained = None,
    all_: Annotated[bool, typer.Option("--all", help="Train every model, one after another, and sum them up in a "
                                       "table (a model that fails does not stop the others).")] = False,
    data_root: Annotated[str | None, typer.Option(help="With --all: the folder holding every dataset "
                                                       "(as ../shared/data is laid out).")] = None,
    nproc: Nproc = None,
    nnodes: Nnodes = 1,
    node_rank: NodeRank = 0,
    master_addr: MasterAddr = None,
    master_port: MasterPort = 29500,
    json_: JsonFlag = False,
):
    """Train a model on its dataset (or the built-in sample) and write weights, card, history and plots
    to runs/ (or --out); the shipped weights are never replaced without --replace-shipped. One run at a time
    writes to a folder; a checkpoint left there by an interrupted run needs --resume or --restart. Every run logs
    to <out>/logs/<model>/<started>/ for TensorBoard (tensorboard --logdir runs) and `zoo runs`."""
    _check_early(name, data)
    if data_root is not None and not Path(data_root).is_dir():
        raise ZooError(f"--data-root {data_root}: no such folder")
    from zoo.training import train_all

    if nproc is not None:
        from zoo.training import launch

        folder = out if out is not None else weights_dir() if replace_shipped else None   # for its failure line
        return launch(nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                      master_port=master_port, out=folder, argv=_train_argv())
    if all_ == (name is not None):
        raise ZooError("give a model name or --all (not both)")
    if all_ and data is not None:
        raise ZooError("--all trains every model, each on its own dataset: use --data-root DIR, not --data")
    options = dict(out=out, device=device, resume=resume, restart=restart, force=force,
                   replace_shipped=replace_shipped, strict=strict, pretrained=pretrained, console=err_console,
                   epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, finetune_epochs=finetune_epochs,
                   scheduler=schedule, plateau_patience=plateau_patience, plateau_factor=plateau_factor,
                   amp=amp or None)
    if not all_:
        from zoo.training import train as train_model

        card = train_model(name, data, **options)
        return print_json(card) if json_ else None
    rows = train_all(data_root, **options)
    if json_:
        print_json([vars(r) for r in rows])
    else:
        _print_summary(rows)
    failed = [r for r in rows if r.status in ("failed", "diverged")]
    if failed:
        raise ZooError(f"{len(failed)} of {len(rows)} models did not train: {', '.join(r.model for r in failed)} "
                       "(the reasons are above)", exit_code=1)


def _print_summary(rows) -> None:
    table = Table(title=f"zoo train --all: {len(rows)} models", title_justify="left")
    for col in ("model", "status", "metric", "time"):
        table.add_column(col, justify="right" if col == "time" else "left")
    styles = {"failed": "red", "diverged": "red", "already trained": "dim"}
    for r in rows:
        metric = f"{r.split} {r.monitor} {r.value:.4g}" if r.value is not None else "-"
        minutes, seconds = divmod(round(r.seconds), 60)
        table.add_row(r.model, r.status, metric, f"{minutes}:{seconds:02d}", style=styles.get(r.status))
    Console(width=max(console.width, 100)).print(table)


@command
def evaluate(
    name: Annotated[str, typer.Argument(help="Model name.")],
    data: Annotated[str | None, typer.Option(help="The test split in the dataset's format.",
                                             show_default="the built-in test sample, for weights trained on it")] = None,
    weights: Annotated[str | None, typer.Option(help="Weights file.", show_default="the shipped weights")] = None,
    out: Annotated[str, typer.Option(help="Folder for the confusion-matrix PNG.")] = "runs",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    builtin: Annotated[bool, typer.Option("--builtin", help="Score weights trained on real data on the built-in "
                                          "synthetic sample anyway.")] = False,
    strict: Annotated[bool, typer.Option(help="Stop at an unreadable image instead of skipping it.")] = False,
    json_: JsonFlag = False,
):
    """Score weights on a test split: the metrics table, and a confusion matrix PNG for classifiers (in runs/,
    or --out). Scoring weights on the data they were trained on gets a warning."""
    _check_early(name, data, weights)
    from zoo.training import evaluate as evaluate_model

    result = evaluate_model(name, data, weights=weights, out=out, device=device, builtin=builtin, strict=strict)
    if json_:
        return print_json(result)
    table = Table(title=printable(f"{name} on {result['data']} ({result['samples']} samples)"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {printable(note)}", highlight=False)
    for warning in result.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {printable(warning)}", highlight=False, soft_wrap=True)
    for plot in result.get("plots", []):
        console.print(f"wrote {printable(plot)}", highlight=False)


@command
def runs(
    folder: Annotated[str, typer.Argument(help="The folder `zoo train` wrote to; its runs are under logs/.")] = "runs",
    model: Annotated[str | None, typer.Option(help="Only this model's runs.", show_default="every model")] = None,
    sort: Annotated[Literal[SORTS], typer.Option(help="date: newest first; model; metric: best first (each run by its "
                                                     "monitored metric); time: quickest first.")] = "date",
    plot: Annotated[str | None, typer.Option(help="Also draw the runs' validation curves on one PNG at FILE.",
                                             show_default="no plot")] = None,
    json_: JsonFlag = False,
):
    """Compare training runs without TensorBoard: model, data, what the recipe changed, best epoch, validation
    metric, time. Every `zoo train` run records itself in <out>/logs/<model>/<started>/run.json."""
    left_out = []
    rows = sort_runs(read_runs(folder, model, left_out), sort)
    for line in left_out:
        err_console.print(printable(f"note: left out an unreadable run record, {line}"), highlight=False)
    if plot is not None:
        written = plot_runs(rows, writable_file(plot, "--plot"))
        err_console.print(f"wrote {written}", highlight=False)
    if json_:
        return print_json([{k: v for k, v in r.items() if k != "history"} for r in rows])
    table = Table(title=f"{len(rows)} training run(s) under {folder}", title_justify="left")
    table.add_column("run (model/started)", no_wrap=True)
    for col in ("data", "recipe changes", "best epoch", "metric", "time"):
        table.add_column(col, justify="right" if col in ("best epoch", "time") else "left")
    for r in rows:
        metric = f"{r['split']} {r['monitor']} {r['value']:.4g}" if r["value"] is not None else r["status"]
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        table.add_row(escape(r["run"].removeprefix("logs/")), escape(f"{r['data']} {r['fingerprint'][:8]}"),
                      escape(changes), f"{r['best_epoch']}/{r['epochs_run']}", metric, seconds,
                      style="red" if r["status"] != "finished" else None)
    Console(width=max(console.width, 140)).print(table)


@command
def lr_find(
    name: Annotated[str, typer.Argument(help="Model name.")],
    data: Annotated[str | None, typer.Option(help="Dataset folder or file in its real format.",
                                             show_default="the built-in sample")] = None,
    out: Annotated[str | None, typer.Option(help="Folder for the plot, NAME.lr-find.png.", show_default="runs/")] = None,
    steps: Annotated[int, typer.Option(min=10, help="Batches, one per learning rate.")] = 200,
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option(help="Last learning rate.")] = 10.0,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch size (the best rate depends on it).",
                                                   show_default="the recipe's")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    pretrained: Pretrained = None,
    json_: JsonFlag = False,
):
    """The learning-rate range test: the rate grows exponentially over --steps batches while the smoothed training
    loss is recorded; plots loss against rate and suggests a rate for `zoo train NAME --lr` (the rule is printed).
    Nothing is trained for good: the weights and the optimizer are restored afterwards."""
    from zoo.training import find_lr

    result = find_lr(name, data, out=out, steps=steps, start=start, end=end, batch_size=batch_size, device=device,
                     pretrained=pretrained, console=err_console)
    if json_:
        return print_json(result)
    console.print(f"{name}: {result['steps_run']} steps at batch size {result['batch_size']} ({result['optimizer']}); "
                  f"stopped: {result['stopped']}", highlight=False)
    if result["suggestion"] is None:
        console.print("[yellow]no suggestion: the loss never fell; try a lower --start or more --steps[/]")
    else:
        console.print(f"suggested learning rate {result['suggestion']:g}: {result['rule']} (the lowest was at "
                      f"{result['lowest_loss_lr']:.2g}); the recipe's is {result['recipe_lr']:g}", highlight=False)
        console.print(f"train with it: zoo train {name} --lr {result['suggestion']:g}", highlight=False)
    console.print(f"wrote {result['plot']}", highlight=False)


def _print_parity(title: str, report) -> None:
    tol = report.tolerance
    judged = f"atol {tol['atol']:g}, rtol {tol['rtol']:g}" if tol else "errors reported, judged by accuracy"
    table = Table(title=printable(f"{title}: {report.backend}, {judged}"), title_justify="left")
    for col in PARITY_COLUMNS:
        table.add_column(col, justify="left" if col in ("inputs", "output", "result") else "right")
    for row in parity_rows(report):
        table.add_row(*row, style="red" if row[-1].startswith("FAIL") else None)
    Console(width=max(console.width, 130)).print(table)  # nine columns: too wide for 80, even in a pipe
    _print_checks(report)


def _print_table(title: str, columns, rows, left: tuple[str, ...], width: int = 110) -> None:
    """A report table: `left` columns left-aligned, the rest right; rows whose result is FAIL in red."""
    table = Table(title=printable(title), title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    for row in rows:
        table.add_row(*row, style="red" if row[-1] == "FAIL" else None)
    Console(width=max(console.width, width)).print(table)


def _print_raw_parity(title: str, report) -> None:
    """A raw-input bundle's parity against zoo.runtime: per output, agreement and the largest differences."""
    samples, budget = report.samples, report.budget
    _print_table(f"{title}: vs {report.reference}; {samples['count']} raw samples ({samples['source']}), "
                 f"{report.backend}", RAW_PARITY_COLUMNS, raw_parity_rows(report), ("output", "result"))
    console.print("budget: " + (f"probabilities within {budget['max_probability_difference']:g}; top-1 {budget['top1']}"
                                if report.judges_probabilities else
                                f"outputs within atol {budget['atol']:g} + rtol {budget['rtol']:g}"), highlight=False)
    _print_checks(report)


def _print_checks(report) -> None:
    """The structural checks and any failure of a parity report, without its table (a reduced precision's: the
    cases it ran, their values judged by its accuracy)."""
    checks = ", ".join(f"{c['check']} {({True: 'ok', False: 'FAIL', None: 'n/a'})[c['passed']]}"
                       for c in report.checks)
    ran = "" if report.judges_values else f"; ran {len(report.cases)} input cases"
    console.print(f"checks: {checks}{ran}", markup=False, highlight=False)
    for failure in report.failures:
        console.print(f"[red]FAIL[/] {printable(failure)}", highlight=False)


def _print_accuracy(title: str, report) -> None:
    data = report.data
    _print_table(f"{title}: {data['validation_samples']} validation samples ({data['source']}), {report.backend}",
                 ACCURACY_COLUMNS, accuracy_rows(report), ("measure", "result"))
    if data.get("note"):
        console.print(f"[yellow]note:[/] {printable(data['note'])}", highlight=False)


def _comma_list(value: str) -> builtins.list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@command
def export(
    name: Annotated[str | None, typer.Argument(help="Model name, e.g. clouds-cnn.",
                                               show_default="the model last trained into runs/, with those weights")] = None,
    format_: Annotated[str, typer.Option("--format", help="onnx, torchscript, pt2 or all (or a comma-separated "
                                                          "list); triton: a Triton model repository in <out>/triton/ "
                                                          "(made from the ONNX bundle, which is written too); web: a "
                                                          "static folder <out>/<name>-web/ whose page runs the model "
                                                          "in the browser (made from the raw-input bundle, which is "
                                                          "written too).")] = "onnx",
    weights: Annotated[str | None, typer.Option(help="Weights file.", show_default="the shipped weights")] = None,
    out: Annotated[str, typer.Option(help="Folder for the bundles (<out>/<name>-<format>/).")] = "bundles",
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Export untrained weights "
                                                 "(for testing; the manifest says so).")] = False,
    data: Annotated[str | None, typer.Option(help="Dataset folder or file: adds real samples to the parity check; "
                                                  "for reduced precisions, its validation split measures the accuracy "
                                                  "and its training split calibrates int8-static.",
                                             show_default="the built-in sample")] = None,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance.", show_default="the spec's, 1e-5 for most")] = None,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance.", show_default="the spec's, 1e-5")] = None,
    precision: Annotated[str, typer.Option(help="ONNX precision: fp32, fp16, int8-dynamic, int8-static or all (or a "
                                                "comma-separated list); reduced ones go to <name>-onnx-<precision>/, "
                                                "written only within the accuracy budget.")] = "fp32",
    optimize: Annotated[bool, typer.Option("--optimize", help="Save ONNX Runtime's offline-optimised graph (for "
                                           "onnxruntime on CPU), so that loading does not redo it.")] = False,
    min_agreement: Annotated[float, typer.Option(help="Budget, classifiers: share of validation samples whose top-1 "
                                                      "class must match fp32's.")] = 0.99,
    max_drop: Annotated[float, typer.Option(help="Budget, classifiers: how far the model's metric may fall "
                                                 "(0.01 = 1 point of accuracy).")] = 0.01,
    max_mse_increase: Annotated[float, typer.Option(help="Budget, regression and series: relative MSE increase "
                                                         "allowed (0.02 = 2 %).")] = 0.02,
    raw_inputs: Annotated[bool, typer.Option("--raw-inputs", help="Also write <name>-onnx-raw/: the fp32 ONNX model "
                                             "with its preprocessing in the graph, taking decoded pixels (uint8, any "
                                             "size), CSV values and category names; any ONNX Runtime binding runs it "
                                             "without zoo.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Export every model that has shipped weights.")] = False,
    sign: Annotated[str | None, typer.Option(metavar="KEY", help="Sign each bundle with this private key (zoo "
                                             "keygen): model.sig, checked by --trusted-key.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace bundles in --out that were exported from "
                                          "other weights (refused otherwise).")] = False,
    onnxruntime_web: Annotated[str | None, typer.Option("--onnxruntime-web", metavar="PATH", help="--format web: "
                                                        "onnxruntime-web's files from here (the tarball of npm pack "
                                                        "onnxruntime-web@VERSION, or a folder holding them).",
                                                        show_default="zoo's cache, filled with npm the first "
                                                                     "time")] = None,
    json_: JsonFlag = False,
):
    """Export a model to ONNX / TorchScript / torch.export bundles; parity is measured before writing.
    Reduced ONNX precisions are judged by their accuracy on held-out data (the validation split of --data,
    else the built-in sample) against a budget. --format triton adds the model to the Triton model repository
    <out>/triton/. Without a name: the model last trained into runs/ (zoo train's default), with those weights."""
    _check_early(name, data, weights)
    with err_console.status("exporting") as status:
        result = export_models(name, weights, all_, _comma_list(format_), out, random_weights=random_weights,
                               data=data, atol=atol, rtol=rtol, precisions=_comma_list(precision), optimize=optimize,
                               budget=Budget(min_agreement, max_drop, max_mse_increase), sign=sign, replace=replace,
                               raw_inputs=raw_inputs, onnxruntime_web=onnxruntime_web,
                               progress=lambda model: status.update(printable(
                                   f"exporting {model} ({format_}, {precision}) and measuring parity")))
    if json_:
        print_json([o.to_dict() for o in result.sorted()] + [r.to_dict() for r in result.repositories])
    else:
        for outcome in result.sorted():
            _print_outcome(outcome)
        for r in result.repositories:
            console.print(printable(f"wrote {', '.join(map(str, r.models))} (Triton model repository {r.folder})"),
                          highlight=False)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {printable(note)}", highlight=False)
    error = result.error(brief=True)
    if error is not None:
        raise error


def _print_outcome(outcome) -> None:
    """One bundle of an export: its parity and accuracy reports, then what was written or why not."""
    if outcome.parity is not None and outcome.raw_inputs:
        _print_raw_parity(outcome.title, outcome.parity)
    elif outcome.parity is not None and outcome.precision == "fp32":
        _print_parity(outcome.title, outcome.parity)
    elif outcome.parity is not None:   # reduced: the structure and shapes checked, the values judged below
        _print_checks(outcome.parity)
    if outcome.accuracy is not None:
        _print_accuracy(outcome.title, outcome.accuracy)
    if outcome.passed and outcome.format == "web":
        console.print(printable(f"wrote {outcome.bundle} (the raw-input model with a page that runs it in the "
                                f"browser; serve the folder: python3 -m http.server -d {outcome.bundle})"),
                      highlight=False)
    elif outcome.passed:
        console.print(printable(f"wrote {outcome.bundle} ({outcome.exporter['name']}"
                                + ("" if outcome.precision == "fp32" else f", {outcome.precision}")
                                + (", preprocessing in the graph" if outcome.raw_inputs else "") + ")"),
                      highlight=False)
    elif outcome.parity_failed:
        console.print(f"[red]parity failed: no {outcome.format} bundle written[/]")
    else:
        console.print(f"[red]refused:[/] {printable(outcome.reason)}", highlight=False)


@command
def verify(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, e.g. bundles/clouds-cnn-onnx.")],
    weights: Annotated[str | None, typer.Option(help="The source weights.",
                                                show_default="found by the manifest's sha256 among the shipped "
                                                             "weights and runs/")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset folder or file: adds real samples; for a reduced "
                                                  "precision, its validation split re-measures the accuracy.")] = None,
    trust_code: TrustCodeFlag = False,
    trusted_key: TrustedKeys = None,
    json_: JsonFlag = False,
):
    """Re-check a bundle: model file checksum, manifest against the model, parity against the source weights."""
    _check_early(data=data, weights=weights)
    result = verify_bundle(bundle, weights=weights, data=data, trust_code=trust_code, trusted_keys=trusted_key,
                           check=False)
    if json_:
        print_json(result.to_dict())
    else:
        _print_verification(result)
    if result.refusal is ParityError:
        raise ParityError(f"{bundle}: parity against the source weights failed")
    if result.refusal is not None:
        raise result.error()


def _print_verification(result) -> None:
    bundle = result.bundle
    if result.parity and result.raw_inputs:
        _print_raw_parity(bundle, result.parity)
    elif result.parity and result.precision == "fp32":
        _print_parity(bundle, result.parity)
    elif result.parity:
        _print_checks(result.parity)
    else:
        checks = ", ".join(f"{c['check']} {({True: 'ok', False: 'FAIL', None: 'n/a'})[c['passed']]}"
                           for c in result.checks)
        console.print(f"checks: {checks}", markup=False, highlight=False)
    if result.accuracy:
        _print_accuracy(bundle, result.accuracy)
    if not result.passed:
        return
    if result.web:
        web = result.web
        console.print(printable(f"web page: {web['files']} files (index.html, onnxruntime-web {web['onnxruntime_web']}) "
                                "match the sealed manifest's sha256" + ("" if web["note"] else " and zoo's pins")),
                      highlight=False)
        if web["note"]:
            console.print(f"[yellow]note:[/] {printable(web['note'])}", highlight=False)
    tests = result.test_data
    if tests:
        golden = f", {tests['golden']['cases']} golden cases" if tests["golden"] else ""
        console.print(f"test vectors: {tests['vectors']['sets']} sets reproduced by bare onnxruntime{golden}",
                      highlight=False)
    elif result.format == "onnx":
        console.print("[yellow]note:[/] no test vectors (exported before zoo wrote them)", highlight=False)
    if result.note:
        console.print(f"[yellow]note:[/] {printable(result.note)}", highlight=False)
    checked = ("" if not result.parity else ", parity passed" if result.precision == "fp32"
               else ", inputs and outputs checked" + (", accuracy within its budget" if result.accuracy else ""))
    console.print(printable(f"verified {bundle}: sha256 {result.file_sha256[:12]}…, manifest matches the model"
                            f"{checked}"),
                  highlight=False)


def _train_argv() -> builtins.list[str]:
    """The `zoo train` arguments this process got, without the options that launch torchrun."""
    args = sys.argv[sys.argv.index("train") + 1:] if "train" in sys.argv else []
    launch_options = {"--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port"}
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        key = arg.split("=", 1)[0]
        if key in launch_options:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def _csv_list(value: str, allowed: tuple, what: str) -> builtins.list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise ZooError(f"--{what}: expected a comma-separated list of {', '.join(allowed)}, got {value!r}")
    return items


@command
def predict(
    bundle: Annotated[str, typer.Argument(help="Bundle folder written by `zoo export`.")],
    inputs: Annotated[builtins.list[str], typer.Argument(
        help="Image files or folders of images for image models; one CSV for tabular and series models.")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes shown per input (classifiers).")] = 3,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    backend: Annotated[str | None, typer.Option(help="onnxruntime, torchscript or pt2.",
                                                show_default="the one that runs the bundle's format")] = None,
    set_: Annotated[builtins.list[str] | None, typer.Option(
        "--set", help="NAME=VALUE for a model's other input, e.g. --set alphabet=Latin.")] = None,
    strict: Annotated[bool, typer.Option(help="Refuse inputs the model was not trained on (values outside the "
                                         "training range, 16-bit images) instead of answering with a warning.")] = False,
    verify: Annotated[bool, typer.Option(help="Check the model file's sha256 and the manifest against the copy "
                                         "sealed into it (proves it was not edited, not who made it); "
                                         "--no-verify skips that.")] = True,
    trust_code: TrustCodeFlag = False,
    trusted_key: TrustedKeys = None,
    json_: JsonFlag = False,
):
    """Run a bundle on files: the top classes with probabilities, or the predicted values. A folder gives its
    image files (sorted; other files are skipped with a note). ONNX bundles start in about a second; TorchScript
    and pt2 bundles import torch first, which adds several seconds (more on a busy machine) before the first
    prediction."""
    zoo.runtime.read_manifest(bundle)   # a bad bundle, then a missing input: both said before torch is imported
    _check_early(inputs=inputs)

    fixed = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ZooError(f"--set expects NAME=VALUE, got {item!r}")
        fixed[key] = value
    notes: builtins.list[str] = []   # e.g. the files of a folder that are not images
    try:
        with zoo.runtime.load(bundle, device=device, backend=backend, verify=verify, trust_code=trust_code,
                              trusted_keys=trusted_key) as session:
            results = zoo.runtime.predict_files(session, inputs, top_k=top_k, fixed=fixed, strict=strict,
                                                notes=notes)
    except ValueError as e:
        raise ZooError(str(e)) from None
    for note in notes:
        err_console.print(f"note: {escape(note)}", highlight=False)
    if json_:
        return print_json(results)
    table = Table(title=printable(f"{session.manifest.model} ({session.backend} on {session.device})"))
    table.add_column("input")
    for name in results[0]["outputs"]:
        table.add_column(printable(name))
    for r in results:
        cells = []
        for values in r["outputs"].values():
            if values and isinstance(values[0], dict):
                cells.append("\n".join(f"{printable(v['label'])} {v['probability']:.3f}" for v in values))
            else:
                cells.append(", ".join(f"{v:.4g}" for v in values))
        table.add_row(printable(r["input"]), *cells)
    console.print(table)
    for r in results:
        for warning in r["warnings"]:
            err_console.print(f"[yellow]warning:[/] {printable(r['input'])}: {printable(warning)}", highlight=False)
    if session.manifest.caveat:
        err_console.print(f"[yellow]note:[/] {printable(session.manifest.caveat)}", highlight=False)
    if session.manifest.random_weights:
        err_console.print("note: this bundle has random weights; its predictions are meaningless")


@command
def bench(
    target: Annotated[str, typer.Argument(metavar="NAME_OR_BUNDLE", help="Model name or bundle folder.")],
    backend: Annotated[str, typer.Option(help="Comma-separated: onnxruntime,torchscript,pt2,eager.")]
        = "onnxruntime,torchscript,pt2,eager",
    device: Annotated[str, typer.Option(help="Comma-separated: cpu,cuda.")] = "cpu,cuda",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,64,256",
    iters: Annotated[int, typer.Option(min=1, help="Timed iterations per batch size.")] = 100,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed iterations first.")] = 10,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for every backend.",
                                                show_default="the cores this process may use")] = None,
    precision: Annotated[str, typer.Option(help="ONNX precisions side by side: fp32, fp16, int8-dynamic, "
                                                "int8-static or all (bundles beside the given one, else exported).")]
        = "fp32",
    json_file: Annotated[str | None, typer.Option("--json", help="Also write the results as JSON to FILE.")] = None,
    trust_code: Annotated[bool, typer.Option("--trust-code", help="Load the TorchScript / pt2 bundles beside the "
                                             "given one (their files can run code when loaded); without it they "
                                             "are skipped. Bundles bench exports itself are always loaded.")]
        = False,
):
    """Latency, throughput, size and memory per backend x precision x device x batch, against eager PyTorch.
    Exits 1 when nothing could be measured."""
    backends = _csv_list(backend, zbench.BACKENDS, "backend")
    devices = _csv_list(device, zbench.DEVICES, "device")
    precisions = builtins.list(PRECISIONS) if precision.strip() == "all" else _csv_list(precision, PRECISIONS, "precision")
    try:
        batches = [int(b) for b in batch.split(",")]
    except ValueError:
        raise ZooError(f"--batch: expected comma-separated integers, got {batch!r}") from None
    if json_file:
        writable_file(json_file, "--json")
    _refuse_raw_inputs(target, "zoo bench")
    with err_console.status("benchmarking") as status:
        result = zbench.run(target, backends, devices, batches, iters, warmup, threads,
                            progress=lambda m: status.update(f"benchmarking {m}"), precisions=precisions,
                            trust_code=trust_code)
    if json_file:
        write_json(Path(json_file), result)
    table = Table(title=printable(f"{result['model']}: {result['threads']} thread(s), {result['iters']} iters, "
                                  f"weights {result['weights']}; eager baseline {result.get('eager_weights', '-')}"))
    for col in ("backend", "precision", "device", "batch", "size MB", "create ms", "first ms", "mean ms",
                "p50/p90/p99 ms", "CV", "samples/s", "peak MB RSS/GPU", "vs eager", "vs fp32"):
        table.add_column(col, justify="left" if col in ("backend", "precision", "device") else "right")
    for r in result["rows"]:
        cv = f"{r['cv']:.2f}" + (" [yellow]unstable[/]" if r["unstable"] else "")
        memory = f"{r['peak_rss_mb']:.0f}" + ("" if r["gpu_mb"] is None else f"/{r['gpu_mb']:.0f}")
        speedup = f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] else "-"
        vs_fp32 = f"{r['speedup_vs_fp32']:.2f}x" if r["speedup_vs_fp32"] and r["precision"] != "fp32" else "-"
        size = "-" if r["size_mb"] is None else f"{r['size_mb']:.3f}"
        table.add_row(r["backend"], r["precision"], r["device"], str(r["batch"]), size, f"{r['session_ms']:.1f}",
                      f"{r['first_ms']:.2f}", f"{r['mean_ms']:.3f}",
                      f"{r['p50_ms']:.3f}/{r['p90_ms']:.3f}/{r['p99_ms']:.3f}", cv, f"{r['throughput_per_s']:,.0f}",
                      memory, speedup, vs_fp32)
    Console(width=max(console.width, 180)).print(table)  # too many columns for 80, even in a pipe
    console.print(f"[dim]{result['timing']}; peak RSS is the worker process's, which imports torch only for "
                  "torchscript, pt2 and eager[/]")
    for s in result["skipped"]:
        what = s["backend"] + ("" if s.get("precision", "fp32") == "fp32" else f" {s['precision']}")
        console.print(f"skipped {what} on {s['device']}: {printable(s['reason'])}", highlight=False)
    if not result["rows"]:
        raise ZooError("nothing could be measured: every backend x device was skipped (reasons above)", exit_code=1)


@command
def keygen(key: Annotated[str, typer.Argument(metavar="KEY", help="Where to write the private key (PEM, mode 0600), "
                                              "e.g. signing-key.pem; the public key goes beside it as "
                                              "signing-key.pub.")]):
    """Make a key pair for signing bundles (zoo export --sign KEY) and checking them (--trusted-key KEY.pub).
    Keep the private key to yourself; give the public key to whoever loads your bundles."""
    private, public = zoo.runtime.make_key_pair(key)
    console.print(f"wrote {private} (private: sign with zoo export --sign {private}) and {public} (public: "
                  f"check with --trusted-key {public})", markup=False, highlight=False, soft_wrap=True)


@command
def doctor(
    device: Annotated[str | None, typer.Option(help="Also check that this device can be used (cuda); exit 1 if not.",
                                              show_default="no device check")] = None,
    json_: JsonFlag = False,
):
    """What this machine can run: Python, torch and its CUDA build, the ONNX Runtime packages installed and the
    providers that really load, CUDA/cuDNN libraries, GPUs, threads. Exits 1 when something is broken or the
    --device asked for cannot work."""
    if device not in (None, "cpu", "cuda"):
        raise ZooError(f"--device {device!r}: expected cpu or cuda")
    with err_console.status("zoo doctor") as status:   # a spinner on a terminal only
        report = diagnose(device, progress=lambda step: status.update(f"zoo doctor: {step}"))
    if json_:
        print_json(report)
    else:
        ort, torch_info = report["onnxruntime"], report["torch"]
        table = Table(show_header=False, title="zoo doctor", title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("python", f"{report['python']} on {report['platform']}")
        table.add_row("onnxruntime packages", ", ".join(f"{d['name']} {d['version']}"
                                                        for d in report["onnxruntime_distributions"]) or "none")
        table.add_row("providers compiled in", ", ".join(ort["compiled"]) or "-")
        for row in ort["providers"]:
            table.add_row(f"  {row['provider']}", "[green]loads[/]" if row["loads"] else
                          f"[red]does not load[/]: {printable(row['error'] or '')}")
        if torch_info["installed"]:
            table.add_row("torch", f"{torch_info['version']} (CUDA build {torch_info['cuda_build']}, cuDNN "
                                   f"{torch_info['cudnn']}); GPU usable: {torch_info['cuda_available']} "
                                   f"{', '.join(torch_info['devices'])}; {torch_info['threads']} threads")
        else:
            table.add_row("torch", f"not installed ({printable(torch_info['hint'])})")
        for name, lib in report["cuda_libraries"].items():
            found = ", ".join(lib["found"][:2]) or "not found"
            version = f" (version {lib['version']})" if lib["version"] else ""
            table.add_row(f"lib {name}", printable(found + version))
        gpu = report["gpus"]
        table.add_row("GPUs (nvidia-smi)", printable(", ".join(gpu["devices"]) or gpu["error"] or "none"))
        t = report["threads"]
        table.add_row("threads", f"{t['usable_cores']} usable cores of {t['cpu_count']}; OMP_NUM_THREADS="
                                 f"{t['OMP_NUM_THREADS']}, MKL_NUM_THREADS={t['MKL_NUM_THREADS']}")
        console.print(table)
        for p in report["problems"]:
            console.print(f"[red]problem:[/] {printable(p['problem'])}\n  [bold]fix:[/] {printable(p['fix'])}", highlight=False)
        if report["ok"]:
            console.print("[green]ok[/]" + (f": {device} can be used" if device else ""))
    if not report["ok"]:
        raise typer.Exit(1)


def _refuse_raw_inputs(target, command: str) -> None:
    """Raw-input bundles take pixels, CSV columns and category names, not the network's tensors that `command`
    is built on: one line saying what to use instead."""
    if (Path(target) / zoo.runtime.MANIFEST_NAME).is_file() and zoo.runtime.read_manifest(target).raw is not None:
        raise ZooError(f"{target} is a raw-input bundle (preprocessing in the graph); {command} takes the model's "
                       "tensors: give it the <name>-onnx bundle" + (" (benchmarks/raw_inputs.py measures raw-input "
                                                                     "bundles)" if command == "zoo bench" else ""))


def _bundle_for(target: str, out: str = "bundles") -> Path:
    """`zoo.export.bundle_for`, an export it needs shown under a status line, its notes said."""
    status = err_console.status("")
    try:
        bundle, notes = bundle_for(target, out, progress=lambda message: (status.update(message), status.start()))
    finally:
        status.stop()
    for note in notes:
        err_console.print(printable(f"note: {note}"), highlight=False)
    return bundle


@command
def serve(
    targets: Annotated[builtins.list[str], typer.Argument(
        metavar="BUNDLE_OR_NAME...", help="Bundle folders, or model names (bundles/<name>-onnx, exported "
                                          "with the shipped weights if missing).")],
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 exposes the models to the network.")]
        = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port (0: any free port).")] = 8000,
    engine: Annotated[str, typer.Option(help="zoo (uvicorn, in worker processes started here) or "
                                             "triton (the real Triton Inference Server on a generated model "
                                             "repository).")] = "zoo",
    max_batch_size: Annotated[int, typer.Option(min=1, help="Most rows per backend call, and per request "
                                                         "(1: no batching).")] = 64,
    max_queue_delay_ms: Annotated[float, typer.Option(min=0, help="How long the oldest queued request waits "
                                                      "for others to batch with (0: only those already "
                                                      "waiting).")] = 0.0,
    instances: Annotated[int | None, typer.Option(min=1, help="Backend calls of one model that may run at once "
                                                           "(zoo: worker processes, each holding every model; "
                                                           "Triton: its model instances).",
                                                  show_default="cores / threads (1 on cuda)")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Intra-op threads per instance.",
                                                show_default="1, or cores / instances")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Larger request bodies get 413 (zoo engine; "
                                                         "Triton has its own limits).")] = 32,
    drain_seconds: Annotated[float, typer.Option(min=0, help="On SIGTERM, how long in-flight requests may "
                                                 "take to finish (those still running then get 503).")] = 30,
    max_image_mpx: Annotated[float, typer.Option(min=0.001, help="Larger images (megapixels) get 413 before "
                                                 "they are decoded (zoo engine).")] = 16,
    max_header_kb: Annotated[float, typer.Option(min=1, help="A larger request line + headers gets 431 (zoo "
                                                 "engine).")] = 64,
    head_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a client may take to send a request's "
                                                "head; slower ones get 408 and are disconnected (zoo engine).")] = 10,
    body_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a client may take to send a request's "
                                                "body after its head; the same (zoo engine).")] = 60,
    grpc_port: Annotated[int | None, typer.Option(min=0, max=65535, help="gRPC port (KServe v2 "
                                                  "GRPCInferenceService; 0: any free port).",
                                                  show_default="--port + 1, or any free port with --port 0")] = None,
    metrics_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Triton's metrics port.",
                                                     show_default="--port + 2")] = None,
    triton_env: Annotated[str | None, typer.Option(help="Virtual environment with nvidia-pytriton and zoo "
                                                        "installed (pip install -e '.[triton]').",
                                                   show_default="$ZOO_TRITON_ENV, else this environment")] = None,
    repository: Annotated[str | None, typer.Option(help="Triton: write the model repository here (and keep "
                                                        "it).", show_default="a temporary folder")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (zoo engine).")] = False,
    model_control: Annotated[bool, typer.Option("--model-control", help="Allow the repository's load and unload "
                                                "requests (anyone who can reach the server could stop or swap its "
                                                "models; off: 403, Triton's model control mode none).")] = False,
    trust_code: TrustCodeFlag = False,
    trusted_key: TrustedKeys = None,
):
    """Serve bundles with the Open Inference Protocol (KServe v2) over HTTP and gRPC: /v2/models/NAME/infer,
    NAME-raw for raw inputs, metadata, health, statistics, model load/unload, /classify, dynamic batching,
    Prometheus /metrics and a page at /. SIGTERM drains in-flight requests."""
    if engine not in ("zoo", "triton"):
        raise ZooError(f"--engine must be zoo or triton, got {engine!r}")
    if device not in ("cpu", "cuda"):
        raise ZooError(f"--device must be cpu or cuda, got {device!r}")
    bundles = [_bundle_for(t) for t in targets]
    trust = {"trust_code": trust_code, "trusted_keys": trusted_key}
    for bundle in bundles:
        _refuse_raw_inputs(bundle, "zoo serve")
    from zoo.serve import fit_cores

    instances, threads = fit_cores(instances, threads, device)
    if grpc_port is None:
        grpc_port = 0 if port == 0 else port + 1
    if grpc_port > 65535:
        raise ZooError(f"--port {port}: gRPC goes on --port + 1 by default; choose a lower port or give --grpc-port")
    if engine == "triton":
        return _serve_triton(bundles, host, port, grpc_port, metrics_port, triton_env, repository, device,
                             max_batch_size, max_queue_delay_ms, instances, threads, drain_seconds, trust,
                             model_control)
    options = dict(max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms, instances=instances,
                   workers=instances, max_body_bytes=int(max_body_mb * 2**20),
                   max_image_pixels=int(max_image_mpx * 1e6), max_head_bytes=int(max_header_kb * 1024),
                   head_timeout=head_timeout, body_timeout=body_timeout, trust=trust, model_control=model_control)
    _serve_zoo(bundles, host, port, grpc_port, device, threads, options, drain_seconds, access_log)


def _serve_zoo(bundles, host, port, grpc_port, device, threads, options: dict, drain_seconds, access_log) -> None:
    import zoo.runtime
    import zoo.serve

    sessions = []
    try:
        for bundle in bundles:
            sessions.append(zoo.runtime.load(bundle, device=device, threads=threads, **options["trust"]))
        try:
            zoo.serve.serve(sessions, host, port, zoo.serve.Options(**options), drain_seconds=drain_seconds,
                            access_log=access_log, announce=lambda line: print(plain(line), flush=True),
                            workers=options["workers"], grpc_port=grpc_port)
        except ValueError as e:
            raise ZooError(str(e)) from None
    finally:
        for session in sessions:
            session.close()


def _serve_triton(bundles, host, port, grpc_port, metrics_port, triton_env, repository, device, max_batch_size,
                  max_queue_delay_ms, instances, threads, drain_seconds, trust: dict, model_control: bool) -> None:
    import tempfile
    from pathlib import Path

    import zoo.runtime
    import zoo.serve

    if port == 0 or grpc_port == 0:
        raise ZooError("--engine triton needs a fixed --port and --grpc-port (tritonserver does not pick a free one)")
    metrics_port = port + 2 if metrics_port is None else metrics_port
    if metrics_port > 65535:
        raise ZooError(f"--port {port}: Triton also needs --port + 1 and + 2 (gRPC, metrics); choose a lower port "
                       "or give --grpc-port and --metrics-port")
    install = zoo.serve.find_triton(triton_env)
    manifests = []
    for bundle in bundles:   # checked here, so a bad bundle is one line rather than a model that fails to load
        with zoo.runtime.load(bundle, threads=1, **trust) as session:
            manifests.append(session.manifest)
    names = [m.model for m in manifests]
    if len(set(names)) != len(names):
        raise ZooError(f"two bundles of the same model among {names}: serve one of each")
    with tempfile.TemporaryDirectory(prefix="zoo-triton-") as work:
        repo = Path(repository) if repository else Path(work) / "models"
        folders = zoo.serve.serving_repository(manifests, repo, max_batch_size=max_batch_size,
                                               max_queue_delay_us=round(max_queue_delay_ms * 1000),
                                               instances=instances, threads=threads,
                                               kind="KIND_GPU" if device == "cuda" else "KIND_CPU")
        argv, env = zoo.serve.triton_command(install, repo, Path(work), host, port, grpc_port, metrics_port,
                                             # mode none (no load/unload) needs a repository of only these models
                                             [f.name for f in folders] if model_control or repository else None,
                                             exit_timeout=max(1, round(drain_seconds)))
        print(plain(f"tritonserver: {', '.join(names)} on http://{host}:{port}/ (gRPC {grpc_port}, metrics "
                    f"http://{host}:{metrics_port}/metrics; repository {repo}; Python {install.python})"), flush=True)
        code = zoo.serve.run_foreground(argv, env)
    if code not in (0, -15):
        raise ZooError(f"tritonserver exited with code {code} (its log is above)", exit_code=1)


def main():
    try:
        app()
    except KeyboardInterrupt:   # one that arrives after a command has handled the first (exit cleanup)
        sys.exit(_interrupted())


if __name__ == "__main__":
    main()
