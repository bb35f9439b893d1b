"""Root of the ``csrgan`` command. Each command group lives in its own module and is mounted here."""

from __future__ import annotations

import typer

from csrgan.cli import data, evaluate, jobs, results, submit, sweep, train, upscale, weights

app = typer.Typer(
    name="csrgan",
    help=(
        "Real-world super-resolution experiments: CycleGAN-made real-like LR + SRGAN (x4), "
        "trained with Ray Train, swept with Ray Tune + Optuna, results in Parquet."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(weights.app, name="weights")
app.add_typer(results.app, name="results")
app.command("evaluate")(evaluate.evaluate)
app.command("sweep")(sweep.sweep)
app.command("upscale")(upscale.upscale)
app.command("submit")(submit.submit)
app.add_typer(jobs.app, name="jobs")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
