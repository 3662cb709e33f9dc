"""Run by tests/test_trainer.py under `torchrun --nproc_per_node 2`: trains a linear autoencoder
with SGD on both ranks, saves each rank's weights, and (rank 0) the one-process reference: SGD on
the union of the two ranks' batches in the DistributedSampler's order."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler
from toy_generative import ToyAE, ToyAEConfig

from lab.spec import TrainerSpec
from lab.tracking import ListLogger
from lab.trainer import Trainer

N, B, EPOCHS, SEED = 40, 5, 2, 3


class SGDAutoencoder(ToyAE):
    def configure_optimizers(self):
        return {"main": torch.optim.SGD(self.parameters(), lr=0.5)}

    def training_step(self, batch, ctx):  # no noise: the reference needs no generator
        loss = F.mse_loss(torch.sigmoid(self.logits(batch)), batch.flatten(1))
        ctx.step("main", loss)
        return {"loss": loss.item()}


def build(seed):
    torch.manual_seed(seed)
    return SGDAutoencoder(ToyAEConfig(hidden=3), (1, 2, 2))


def main(out: Path):
    data = torch.rand((N, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    log = ListLogger()
    cfg = TrainerSpec(epochs=EPOCHS, batch_size=B, seed=SEED)
    trainer = Trainer(build(seed=int(os.environ["RANK"])), cfg, device="cpu", logger=log,
                      checkpoint_dir=out / "ckpt")
    rank = trainer.rank  # the ranks built different inits: the trainer broadcasts rank 0's
    trainer.fit(lambda gen, idx: [data[idx[i:i + B]] for i in range(0, len(idx), B)], N)
    torch.save({"weights": trainer.model.state_dict(), "logged": len(log.records)},
               out / f"rank{rank}.pt")
    if rank == 0:
        model = build(seed=0)
        opt = model.configure_optimizers()["main"]
        for epoch in range(EPOCHS):
            shards = []
            for r in range(2):
                s = DistributedSampler(range(N), num_replicas=2, rank=r, shuffle=True, seed=SEED)
                s.set_epoch(epoch)
                shards.append(list(s))
            for i in range(0, len(shards[0]), B):
                batch = data[shards[0][i:i + B] + shards[1][i:i + B]]
                opt.zero_grad()
                F.mse_loss(torch.sigmoid(model.logits(batch)), batch.flatten(1)).backward()
                opt.step()
        torch.save(model.state_dict(), out / "reference.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
