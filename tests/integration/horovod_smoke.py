"""Run under `horovodrun -np 2`: collective ops and one DistributedOptimizer step must agree."""

import horovod.torch as hvd
import torch

hvd.init()
torch.manual_seed(hvd.rank())  # different start on each rank; broadcast must align them
total = hvd.allreduce(torch.tensor([float(hvd.rank())]), op=hvd.Sum)
model = torch.nn.Linear(4, 1)
optimizer = hvd.DistributedOptimizer(
    torch.optim.SGD(model.parameters(), lr=0.1 * hvd.size()),
    named_parameters=model.named_parameters(),
)
hvd.broadcast_parameters(model.state_dict(), root_rank=0)
hvd.broadcast_optimizer_state(optimizer, root_rank=0)
x = torch.randn(8, 4) + hvd.rank()
loss = model(x).pow(2).mean()
optimizer.zero_grad()
loss.backward()
optimizer.step()
weights = hvd.allgather(model.weight.detach())
same = torch.allclose(weights[0], weights[1])
print(f"rank={hvd.rank()} size={hvd.size()} sum={total.item():.0f} same_weights={same}", flush=True)
