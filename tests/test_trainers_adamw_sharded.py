"""AdamW over FSDP full fine-tuning's parameters: sharded layers (DTensor) beside replicated
embeddings and projector (plain tensors). torch's list ("foreach") kernels, CUDA's default,
refuse that mix; the H200 run of benchmarks/bench_fsdp.py failed there (fsdp-full,
"got mixed torch.Tensor and DTensor"). `adamw_foreach` switches them off for such a mix only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from mbpo_bench.trainers.loop import adamw_foreach


def test_adamw_steps_over_mixed_sharded_and_plain_parameters(tmp_path: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        sharded = torch.nn.Parameter(distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)]))
        plain = torch.nn.Parameter(torch.ones(3))
        assert adamw_foreach([sharded, plain]) is False
        assert adamw_foreach([plain]) is None and adamw_foreach([sharded]) is None

        def grads() -> None:
            sharded.grad = distribute_tensor(torch.full((4, 2), 0.5), mesh, [Shard(0)])
            plain.grad = torch.full((3,), 0.5)

        # the list kernels (CUDA's default choice) refuse the mix ...
        grads()
        with pytest.raises(RuntimeError, match=r"mixed torch\.Tensor and DTensor"):
            torch.optim.AdamW([sharded, plain], lr=0.1, foreach=True).step()
        # ... the optimizer the trainers build takes the step, one update for every tensor
        before = sharded.full_tensor().clone(), plain.detach().clone()
        params = [sharded, plain]
        grads()
        torch.optim.AdamW(params, lr=0.1, foreach=adamw_foreach(params)).step()
        assert torch.all(sharded.full_tensor() < before[0])
        assert torch.all(plain.detach() < before[1])
    finally:
        dist.destroy_process_group()
