# The script torchrun starts on every node, once per GPU (or once): it reads the variables
# torchrun gives each process. A real training script calls
# torch.distributed.init_process_group("nccl") here, which reads the same variables, and wraps
# its model in DistributedDataParallel; this one only prints where it is, so that it runs
# anywhere torchrun does.
import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
epochs = parser.parse_args().epochs
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
print(f"rank {rank} of {world} (local rank {os.environ['LOCAL_RANK']}), master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}")
for epoch in range(1, epochs + 1):
    print(f"rank {rank}: epoch {epoch}/{epochs}")
