"""The `zoo` command: thin Typer commands that call library functions and render with rich."""

from __future__ import annotations

import functools
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zoo import registry
from zoo.errors import ZooError
from zoo.weights import headline, read_card

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="The classic PyTorch course models: train, export with parity, predict, bench.")
console = Console()
err_console = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def command(fn):
    """Register a command whose ZooErrors become one clear line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return app.command()(wrapper)


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
    """Show a model's whole spec: architecture, data contract, preprocessing, labels, recipe, weights."""
    spec = registry.get(name)
    card = read_card(spec.name)
    data = spec.to_dict()
    data["weights"] = card
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
        table.add_row(f"input {t.name}", f"{tuple(t.shape)} {t.dtype}")
    for t in spec.outputs:
        table.add_row(f"output {t.name}", f"{tuple(t.shape)} {t.dtype} ({spec.output_kind})")
    for key, pre in data["preprocess"].items():
        table.add_row(f"preprocess {key}", ", ".join(f"{k}={v}" for k, v in pre.items() if k != "kind"))
    for key, values in spec.labels.items():
        table.add_row(f"labels {key}", labels_text(values))
    table.add_row("dataset", spec.dataset)
    table.add_row("recipe", ", ".join(f"{k}={v}" for k, v in data["recipe"].items()))
    table.add_row("course result", spec.course_result)
    if card:
        metrics = card.get("metrics", {})
        for split, values in metrics.items():
            table.add_row(f"weights: {split}", ", ".join(f"{k}={v:.4g}" for k, v in values.items()
                                                         if isinstance(v, (int, float))))
        table.add_row("weights: sha256", card.get("sha256", "?"))
    else:
        table.add_row("weights", "none shipped yet (train with `zoo train " + spec.name + "`)")
    console.print(table)


def main():
    app()


if __name__ == "__main__":
    main()
