"""tfmkit: build, pretrain, fine-tune and benchmark transcriptomic foundation models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_model", "embed", "gene_embeddings", "reconstruct", "TrainedModel", "__version__"]


def __getattr__(name: str):
    # Lazy: `import tfmkit` stays fast (no torch/scanpy import until needed).
    if name in ("load_model", "embed", "gene_embeddings", "reconstruct", "TrainedModel"):
        from tfmkit import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'tfmkit' has no attribute {name!r}")
