"""``tfmkit finetune celltype|ssl|perturbation``: fine-tune a model directory on target cells.

Each command writes a run folder ``OUT`` (``config.yaml``, ``train_log.csv``, ``model/``) whose
``OUT/model`` is a normal model directory (``tfmkit embed`` works on it) recording its parent
model and task. ``OUT`` must not exist; the run is written aside and renamed into place when it
finished, so a failed fine-tune leaves nothing (:mod:`tfmkit.finetune.run`).
"""

from __future__ import annotations

import typer

MODEL_HELP = "Parent model directory (from `tfmkit pretrain --out` or a fine-tune's OUT/model)."
INPUT_HELP = "Target cells: .h5ad / 10x .h5 with raw counts (in X, or in --layer)."
OUT_HELP = "New run folder (must not exist): OUT/model is the fine-tuned model."
MODE_HELP = ("What to train: head (model frozen), full, or partial (the last --unfreeze-blocks "
             "transformer blocks and what follows them).")
LR_HELP = "Peak learning rate."
BATCH_SIZE_HELP = "Cells per step."
INIT_HELP = "pretrained (fine-tune) or random (same architecture from scratch, a control)."
LAYER_HELP = "Layer holding raw counts (default X; 'raw' = adata.raw)."


def _read_input(out: str, input: str):
    """Check ``--out`` before any work, then read the ``--input`` cells."""
    from tfmkit.data.io import read_anndata
    from tfmkit.finetune.run import check_out

    check_out(out)
    return read_anndata(input)


def celltype(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    input: str = typer.Option(..., "--input", "-i", help=INPUT_HELP),
    label_key: str = typer.Option(..., "--label-key", help="obs column with the cell-type labels (cells without a label are dropped and reported)."),
    out: str = typer.Option(..., "--out", "-o", help=OUT_HELP),
    batch_key: str = typer.Option(None, "--batch-key", help="obs column of batches: the validation split is stratified by batch x label."),
    adversarial_batch: bool = typer.Option(False, "--adversarial-batch", help="Add a gradient-reversal batch adversary on --batch-key."),
    mode: str = typer.Option("full", "--mode", help=MODE_HELP),
    unfreeze_blocks: int = typer.Option(1, "--unfreeze-blocks", help="Blocks trained with --mode partial."),
    head: str = typer.Option("linear", "--head", help="Classifier head: linear or mlp."),
    pooling: str = typer.Option("mean", "--pooling", help="Cell embedding fed to the head: mean (of token states; the issue-12 ablation's choice), cls or cls+mean."),
    loss: str = typer.Option("weighted_ce", "--loss", help="ce, weighted_ce (balanced class weights) or focal."),
    steps: int = typer.Option(300, "--steps", help="Optimiser steps (early stopping may end sooner)."),
    lr: float = typer.Option(3e-4, "--lr", help=LR_HELP),
    batch_size: int = typer.Option(32, "--batch-size", help=BATCH_SIZE_HELP),
    patience: int = typer.Option(4, "--patience", help="Validation evaluations (every 25 steps) without improvement before stopping; 0 = off."),
    n_revealed: int = typer.Option(None, "--n-revealed", help="Genes revealed per cell (default: the parent's K)."),
    init: str = typer.Option("pretrained", "--init", help=INIT_HELP),
    layer: str = typer.Option(None, "--layer", help=LAYER_HELP),
    library_key: str = typer.Option(None, "--library-key", help="obs column of per-cell total counts (for files keeping a gene subset)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the head, data order and split."),
) -> None:
    """Fine-tune a cell-type classifier head on the model's cell embedding."""
    from tfmkit.finetune import finetune_celltype

    adata = _read_input(out, input)
    path = finetune_celltype(model, adata, label_key, out, batch_key=batch_key,
                             adversarial_batch=adversarial_batch, mode=mode,
                             unfreeze_blocks=unfreeze_blocks, head=head, pooling=pooling, loss=loss, steps=steps, lr=lr,
                             batch_size=batch_size, patience=patience, n_revealed=n_revealed, init=init,
                             layer=layer, library_key=library_key, seed=seed, progress=True)
    typer.echo(f"wrote {path} (predict with: tfmkit predict --model {path} --input B.h5ad --output C.h5ad)")


def ssl(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    input: str = typer.Option(..., "--input", "-i", help=INPUT_HELP),
    out: str = typer.Option(..., "--out", "-o", help=OUT_HELP),
    steps: int = typer.Option(200, "--steps", help="Optimiser steps."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 3e-4; with --init random the parent's pretraining rate)."),
    batch_size: int = typer.Option(32, "--batch-size", help=BATCH_SIZE_HELP),
    mode: str = typer.Option("full", "--mode", help="full or partial (see finetune celltype)."),
    init: str = typer.Option("pretrained", "--init", help="pretrained (adapt the model) or random (same architecture and objective, trained from scratch on these cells)."),
    layer: str = typer.Option(None, "--layer", help=LAYER_HELP),
    library_key: str = typer.Option(None, "--library-key", help="obs column of per-cell total counts."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order and masking."),
) -> None:
    """Continue the model's own pretraining objective on the target cells (no labels; TxFM Table 3)."""
    from tfmkit.finetune import finetune_ssl

    adata = _read_input(out, input)
    path = finetune_ssl(model, adata, out, steps=steps, lr=lr, batch_size=batch_size, mode=mode,
                        layer=layer, library_key=library_key, seed=seed, init=init, progress=True)
    typer.echo(f"wrote {path} (embed with: tfmkit embed --model {path} --input A.h5ad --output B.h5ad)")


def perturbation(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    input: str = typer.Option(..., "--input", "-i", help="Perturb-seq .h5ad with raw counts, a perturbation column (target gene symbol) and control cells."),
    out: str = typer.Option(..., "--out", "-o", help=OUT_HELP),
    layout: str = typer.Option("tfmkit", "--layout", help="obs conventions: tfmkit (perturbation/context), replogle2022 or nadig2024 (gene/cell_line); controls 'non-targeting'."),
    split: str = typer.Option("perturbation", "--split", help="perturbation (held-out perturbations) or context (leave one context out)."),
    holdout: str = typer.Option(None, "--holdout", help="Held-out genes (comma-separated; default a random 20%) or the held-out context (default: the first)."),
    perturbation_key: str = typer.Option(None, "--perturbation-key", help="obs column of the perturbation (default from --layout)."),
    control_value: str = typer.Option(None, "--control-value", help="Label of control cells (default 'non-targeting')."),
    context_key: str = typer.Option(None, "--context-key", help="obs column of the cell context (default from --layout)."),
    mode: str = typer.Option("full", "--mode", help=MODE_HELP),
    steps: int = typer.Option(500, "--steps", help="Optimiser steps."),
    lr: float = typer.Option(3e-4, "--lr", help=LR_HELP),
    batch_size: int = typer.Option(32, "--batch-size", help=BATCH_SIZE_HELP),
    n_revealed: int = typer.Option(None, "--n-revealed", help="Genes of each cell shown after the perturbation token (default: the parent's K)."),
    train_controls: bool = typer.Option(False, "--train-controls", help="Also train on the control cells of every context (no perturbation token); GPL trains on perturbed cells only."),
    init: str = typer.Option("pretrained", "--init", help=INIT_HELP),
    layer: str = typer.Option(None, "--layer", help=LAYER_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the head, data order, reveals and the default hold-out."),
) -> None:
    """Fine-tune perturbation prediction (GPL §4.6): perturbation token + cell subsequence -> profile."""
    from tfmkit.finetune.perturbation import finetune_perturbation

    adata = _read_input(out, input)
    path = finetune_perturbation(model, adata, out, layout=layout, split=split, holdout=holdout,
                                 perturbation_key=perturbation_key, control_value=control_value,
                                 context_key=context_key, mode=mode, steps=steps, lr=lr,
                                 batch_size=batch_size, n_revealed=n_revealed, train_controls=train_controls,
                                 init=init, layer=layer, seed=seed, progress=True)
    typer.echo(f"wrote {path} (evaluate with: tfmkit benchmark perturbation-prediction --model {path} "
               f"--input {input} --out RES)")
