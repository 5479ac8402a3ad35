"""Run configuration: typed dataclasses loaded from YAML with ``key=value`` overrides.

A run YAML has three sections, ``model`` (the family's config dataclass, e.g.
:class:`tfmkit.models.TxFMConfig`), ``data`` (:class:`DataConfig`) and ``train``
(:class:`TrainConfig`); ``model.family`` (default ``txfm``) and ``model.preset`` fill in the
architecture before the other model keys are applied. Loading checks that the task
(``train.task`` / ``train.objective``) and the model family fit (:func:`tfmkit.tasks.check_compatible`). Overrides use dotted keys
(``train.steps=200 model.depth=4 data.n_revealed=512``) with YAML-typed values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from tfmkit.data.masking import DEFAULT_N_REVEALED, RevealSpec
from tfmkit.errors import TfmkitError
from tfmkit.models.build import check_fields, config_from_dict
from tfmkit.models.protocol import FamilyConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Corpus, preprocessing and masking."""

    datasets: list[str] = field(default_factory=lambda: ["balf"])
    """Bundled datasets used when no ``--data`` files are given (see ``tfmkit doctor``)."""
    qc: bool = True
    """Keep only bundled BALF cells passing QC (200-6000 genes, >= 1000 UMIs, < 10% mito)."""
    paths: list[str] = field(default_factory=list)
    """User ``.h5ad`` / 10x ``.h5`` files (raw counts); each file is one dataset/gene panel."""
    layer: str | None = None
    """Layer holding raw counts (default ``X``)."""
    max_in_memory_gb: float = 4.0
    """Load ``paths`` whole when their counts as in-memory CSR fit in this many GB; larger
    corpora are read in row blocks (no whole matrix in RAM; :mod:`tfmkit.data.sources`)."""
    allow_low_coverage: bool = False
    """Train even when few of a file's genes map to HGNC symbols (e.g. mouse data); off by default."""
    min_cells: int = 10
    """Keep vocabulary genes detected in at least this many corpus cells."""
    library_size: float = 1e5
    """Library-size normalisation target ``L`` (TxFM eq. 3); the one ``L`` of a run: the targets
    and the bound of TxFM's ``rectified_tanh`` (``log(L+1)``) both use it."""
    n_revealed: int = DEFAULT_N_REVEALED
    """``K``: genes revealed to the encoder per cell (capped by the cell's observable genes)."""
    tau: float = 0.0
    """Frequency-weighted masking temperature (``w_i ∝ m_i^tau``); 0 = uniform (TxFM default)."""
    expressed_only: bool = False
    """Reveal only nonzero genes (encodings paper) instead of any observable gene."""
    zero_fraction: float = 0.0
    """With ``expressed_only``: fraction of the revealed tokens given to observable genes the cell
    did not express (BMFM/GPL style; ``RevealSpec.zero_fraction``); 0 = expressed genes only."""
    val_fraction: float = 0.05
    """Fraction of cells held out (per dataset) for the validation loss."""

    @property
    def reveal(self) -> RevealSpec:
        """The reveal-sampling spec of these settings."""
        return RevealSpec(n_revealed=self.n_revealed, tau=self.tau, expressed_only=self.expressed_only,
                          zero_fraction=self.zero_fraction)


@dataclass
class TrainConfig:
    """Optimisation (TxFM §A.1 / SPEC §5)."""

    steps: int = 300
    """Total optimiser steps."""
    batch_size: int = 32
    """Cells per micro-batch."""
    accumulate: int = 1
    """Gradient-accumulation micro-batches per optimiser step."""
    lr: float = 1e-3
    """Peak learning rate of the one-cycle cosine schedule."""
    warmup_frac: float = 0.1
    """Fraction of steps of linear warm-up."""
    weight_decay: float | None = None
    """AdamW weight decay; ``None`` = ``1 / (lr * steps)`` as in TxFM."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-6
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    decay: str = "all"
    """Weight decay on ``all`` parameters (TxFM §A.1) or on weight ``matrices`` only (not
    embeddings, norms, biases, LayerScale, CLS; :func:`tfmkit.optim.param_groups`, issue 12)."""
    task: str = "pretrain"
    """Training task (``tfmkit.tasks.TASKS``): ``pretrain`` = self-supervised ``objective``."""
    objective: str = "poisson_nll"
    """Training objective (criterion name; see ``tfmkit.objectives``)."""
    objective_kwargs: dict = field(default_factory=dict)
    """Extra criterion arguments (e.g. ``loss_on: masked``)."""
    seed: int = 0
    """Seed of initialisation, data order and masking."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    precision: str = "auto"
    """``auto`` = bf16 autocast on GPU, fp32 on CPU; or ``fp32`` / ``bf16``."""
    checkpoint_every: int = 100
    """Write an atomic checkpoint every N steps (and at the end)."""
    log_every: int = 10
    """Log loss / lr / cells-per-second every N steps."""
    val_every: int = 100
    """Validation loss every N steps (0 disables)."""
    val_batches: int = 4
    """Validation batches per evaluation."""
    num_workers: int = 0
    """DataLoader worker processes."""
    task_kwargs: dict = field(default_factory=dict)
    """Options of a fine-tuning task (e.g. ``classes``, ``label_key``, ``head`` of ``celltype``;
    see :mod:`tfmkit.tasks`), written by ``tfmkit finetune`` so the model reloads unchanged."""
    init_from: str | None = None
    """Parent model directory whose weights (and, for the same task, learned task parameters)
    initialise the model before training: fine-tuning. ``None`` = random initialisation."""
    freeze: str = "full"
    """What fine-tuning trains: ``full`` (every parameter), ``head`` (only the task's parameters,
    e.g. a classifier head; the model is frozen) or ``partial`` (the last ``unfreeze_blocks``
    transformer blocks and everything after them; see :mod:`tfmkit.finetune.freeze`)."""
    unfreeze_blocks: int = 1
    """Blocks left trainable with ``freeze: partial``."""
    patience: int = 0
    """Early stopping: stop after this many validation evaluations (every ``val_every`` steps)
    without a lower validation loss, and keep the best checkpoint; 0 disables."""


@dataclass
class RunConfig:
    """A whole pretraining run."""

    model: FamilyConfig = field(default_factory=lambda: config_from_dict({}))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train"]["betas"] = list(d["train"]["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Build and check a run config from its YAML mapping (model / data / train)."""
        from tfmkit.tasks import check_compatible

        d = dict(d or {})
        unknown = set(d) - {"model", "data", "train"}
        if unknown:
            raise TfmkitError(f"unknown config section(s) {sorted(unknown)}; use model, data, train")
        data = _section(DataConfig, d.get("data"))
        model = dict(d.get("model") or {})
        if "library_size" in model:  # configs and checkpoints written before L had one home
            if float(model.pop("library_size")) != float(data.library_size):
                raise TfmkitError("model.library_size is no longer a model option; set "
                                  "data.library_size (the one normalisation target L of a run)")
        cfg = cls(model=config_from_dict(model), data=data, train=_section(TrainConfig, d.get("train")))
        check_compatible(cfg)
        return cfg


def _section(cls, d):
    d = dict(d or {})
    check_fields(cls, d, cls.__name__)
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    return cls(**d)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a shipped preset (``txfm_tiny`` -> ``configs/txfm_tiny.yaml``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / f"{name_or_path}.yaml", CONFIG_DIR / str(name_or_path)):
        if cand.is_file():
            return cand
    shipped = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
    raise TfmkitError(f"config {str(name_or_path)!r} not found; give a YAML path or one of {shipped}")


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a config dict in place."""
    for item in overrides:
        if "=" not in item:
            raise TfmkitError(f"override {item!r} must look like section.key=value, e.g. train.steps=100")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise TfmkitError(f"override key {key!r} must be section.key (model/data/train)")
        d.setdefault(parts[0], {})
        if d[parts[0]] is None:
            d[parts[0]] = {}
        d[parts[0]][parts[1]] = yaml.safe_load(value)
    return d


def load_config(name_or_path: str | Path | None = "txfm_tiny", overrides: list[str] = ()) -> RunConfig:
    """Load a run YAML (path or shipped preset name) and apply dotted overrides."""
    d: dict = {}
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise TfmkitError(f"cannot parse config {path}: {str(err).splitlines()[0]}") from None
        if not isinstance(d, dict):
            raise TfmkitError(f"config {path} must be a mapping with model/data/train sections")
    return RunConfig.from_dict(apply_overrides(d, list(overrides)))
