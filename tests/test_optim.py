"""The optimizers written out in ``colt_ray.core.optim`` equal torch.optim bit for bit, step by step, and a
training process no longer imports torch._dynamo (the import they exist to avoid)."""

import subprocess
import sys

import pytest
import torch

from colt_ray.core.optim import SGD, Adam


def twin_models(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    b = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (
            lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        ),
        (lambda p: SGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
        (lambda p: Adam(p, lr=0.01, weight_decay=1e-3), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3)),
    ],
    ids=["sgd-momentum-wd", "sgd-plain", "adam-wd"],
)
def test_every_step_is_bitwise_equal_to_torch_optim(ours, theirs):
    a, b = twin_models()
    opt_a, opt_b = ours(a.parameters()), theirs(b.parameters())
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        for model, opt in ((a, opt_a), (b, opt_b)):
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.9  # a schedule changes lr between steps, as train() does
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if step == 2:
                model[2].bias.grad = None  # a parameter without a gradient is skipped
            opt.step()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), f"step {step}: {name} differs"


def test_a_training_process_does_not_import_dynamo():
    code = (
        "import sys, torch; from colt_ray.core.config import RecipeConfig; from colt_ray.core.train import "
        "make_optimizer; m = torch.nn.Linear(3, 2); o = make_optimizer(m.parameters(), RecipeConfig()); "
        "m(torch.ones(1, 3)).sum().backward(); o.step(); sys.exit(1 if 'torch._dynamo' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
