"""The ``tfmkit`` command line (typer): one module per command group, imported lazily.

Module top-levels in this package import only typer and the standard library, so ``tfmkit
--help`` and every ``tfmkit <command> --help`` start without torch, scanpy, anndata, numpy, …;
each command imports what it needs inside its body. Errors of kind
:class:`tfmkit.errors.TfmkitError` are printed as one line ``error: <message>`` and exit with
status 2 (:class:`tfmkit.cli.errors.TfmkitGroup`); anything else is a bug and keeps its traceback.

=============  ==========================================
module         commands
=============  ==========================================
``train``      ``tfmkit pretrain``
``embed``      ``tfmkit embed``
``demo``       ``tfmkit demo``
``doctor``     ``tfmkit doctor``
``ablate``     ``tfmkit ablate``
``benchmark``  ``tfmkit benchmark celltype|genes|pretraining|perturbation|perturbation-prediction``
``finetune``   ``tfmkit finetune celltype|ssl|perturbation``
``predict``    ``tfmkit predict``
``datasets``   ``tfmkit datasets simulate-perturbseq``
``explain``    ``tfmkit explain``
``hub``        ``tfmkit hub save|push``
=============  ==========================================
"""

from __future__ import annotations

import typer

from tfmkit.cli import ablate, benchmark, demo, doctor, embed, prepare, train
from tfmkit.cli import finetune, predict
from tfmkit.cli import datasets, explain, hub
from tfmkit.cli.errors import TfmkitGroup

__all__ = ["app", "benchmark_app", "main"]

app = typer.Typer(
    cls=TfmkitGroup,
    help="tfmkit: build, pretrain, fine-tune and benchmark transcriptomic foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
benchmark_app = typer.Typer(
    cls=TfmkitGroup,
    help="Benchmark embeddings against baselines (writes OUT/results.csv and OUT/results.md).",
    no_args_is_help=True,
)

app.command("pretrain")(train.pretrain)
app.command("embed")(embed.embed)
app.command("demo")(demo.demo)
app.command("doctor")(doctor.doctor)
app.command("ablate")(ablate.ablate)
app.command("prepare")(prepare.prepare)
app.add_typer(benchmark_app, name="benchmark")
benchmark_app.command("celltype")(benchmark.celltype)
benchmark_app.command("genes")(benchmark.genes)
benchmark_app.command("pretraining")(benchmark.pretraining)
benchmark_app.command("perturbation")(benchmark.perturbation)
benchmark_app.command("perturbation-prediction")(benchmark.perturbation_prediction)
finetune_app = typer.Typer(
    cls=TfmkitGroup,
    help="Fine-tune a model directory on target cells (writes OUT/model, which records its parent and task).",
    no_args_is_help=True,
)
app.add_typer(finetune_app, name="finetune")
finetune_app.command("celltype")(finetune.celltype)
finetune_app.command("ssl")(finetune.ssl)
finetune_app.command("perturbation")(finetune.perturbation)
app.command("predict")(predict.predict)
datasets_app = typer.Typer(cls=TfmkitGroup, help="Bundled and SIMULATED datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
datasets_app.command("simulate-perturbseq")(datasets.simulate_perturbseq)
app.command("explain")(explain.explain)
hub_app = typer.Typer(cls=TfmkitGroup, help="Share models in the Hugging Face Hub layout (load with --model hf://OWNER/NAME).",
                      no_args_is_help=True)
app.add_typer(hub_app, name="hub")
hub_app.command("save")(hub.save)
hub_app.command("push")(hub.push)


def main() -> None:
    """Console-script entry point (``tfmkit = "tfmkit.cli:main"``)."""
    app(prog_name="tfmkit")
