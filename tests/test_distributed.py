"""DDP: the same config runs under torchrun with 2 CPU processes (gloo)."""

import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file


def test_torchrun_two_cpu_ranks(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path.parent)!r})
        sys.path.insert(0, {__file__.rsplit('/', 1)[0]!r})
        from conftest import GENES, make_counts
        from tfmkit.config import load_config
        from tfmkit.training import pretrain
        cfg = load_config("txfm_tiny", ["model.dim=32", "model.depth=1", "model.heads=2",
            "model.decoder_layers=1", "data.n_revealed=12", "data.min_cells=1",
            "train.batch_size=8", "train.steps=4", "train.val_every=2", "train.device=cpu"])
        adatas = {{"a": make_counts(64, GENES[:30], seed=1), "b": make_counts(48, GENES[10:], seed=2)}}
        pretrain(cfg, {str(tmp_path / 'run')!r}, adatas=adatas, progress=False)
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=29533", str(script)], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    rows = (tmp_path / "run" / "train_log.csv").read_text().strip().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert rows[0].startswith("step,") and steps == [2, 4]  # only rank 0 logs, once per logged step
