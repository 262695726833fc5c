"""Data-parallel training with torch.distributed: one process per CPU (or GPU), gloo.

Started by ``torchrun --standalone --nproc-per-node=N train.py`` (examples/torchrun/job.toml)
in the environment of examples/torchrun/environment.toml (Debian's python3-torch, CPU).
Every process trains the same small network on its own shard of the 8x8 digits
($AICERT_INPUTS/digits); DistributedDataParallel averages the gradients over the ranks
with gloo, through torchrun's rendezvous on the container's own loopback. Hyper-parameters
come from the job's [config] ($AICERT_CONFIG: epochs, learning_rate, batch_size, seed).

Only rank 0 writes to $AICERT_OUTPUT: the weights (model.pt, a state_dict) and
training.json (the loss curve, and what the run saw: world size, backend, GPUs, /dev/shm,
and whether the replicas ended identical, which DDP's all-reduce must guarantee).
"""

import csv
import json
import os

import debian_torch  # noqa: F401 - Debian's torch has no libuv: see there
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    features = torch.tensor([[float(v) / 16.0 for v in row[:-1]] for row in rows])
    labels = torch.tensor([int(row[-1]) for row in rows])
    return TensorDataset(features, labels)


def replicas_identical(model):
    """Whether every rank holds exactly rank 0's parameters."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    same = torch.tensor([int(torch.equal(flat, reference))])
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    with open(os.environ["AICERT_CONFIG"]) as f:
        config = json.load(f)
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)  # the same initial weights on every rank
    dataset = load(os.path.join(os.environ["AICERT_INPUTS"], "digits"))
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=int(config.get("batch_size", 32)), sampler=sampler)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=float(config["learning_rate"]))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    curve = []
    for epoch in range(1, int(config["epochs"]) + 1):
        sampler.set_epoch(epoch)
        totals = torch.zeros(3)  # loss sum, correct, samples: over this rank's shard
        for features, labels in loader:
            optimizer.zero_grad()
            logits = model(features)
            loss = loss_fn(logits, labels)
            (loss / len(labels)).backward()
            optimizer.step()
            totals += torch.tensor(
                [loss.item(), (logits.argmax(1) == labels).sum().item(), len(labels)]
            )
        dist.all_reduce(totals)  # over every rank: the whole training set
        loss_avg, accuracy = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
        curve.append({"epoch": epoch, "loss": loss_avg, "train_accuracy": accuracy})
        if rank == 0:
            print(f"epoch {epoch:3d}  loss {loss_avg:.4f}  train accuracy {accuracy:.4f}")
    shard = torch.tensor([len(sampler)])
    shards = [torch.zeros(1, dtype=shard.dtype) for _ in range(world)]
    dist.all_gather(shards, shard)
    identical = replicas_identical(model.module)
    if rank == 0:
        output = os.environ["AICERT_OUTPUT"]
        torch.save(model.module.state_dict(), os.path.join(output, "model.pt"))
        shm = os.statvfs("/dev/shm")  # noqa: S108 - its size, which gloo and workers use
        report = {
            "framework": f"torch {torch.__version__}",
            "backend": dist.get_backend(),
            "world_size": world,
            "master_addr": os.environ["MASTER_ADDR"],
            "samples_per_rank": [int(s.item()) for s in shards],
            "replicas_identical": identical,
            "cuda_devices": torch.cuda.device_count(),
            "dev_shm_bytes": shm.f_blocks * shm.f_frsize,
            "epochs": curve,
        }
        with open(os.path.join(output, "training.json"), "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
