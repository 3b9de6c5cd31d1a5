"""Test cases for exported models: random BatchNorm statistics, PyTorch reference outputs, and the
cases.safetensors file that the C test `test_networks DIR...` compares the engine against.

A test folder holds model.json, model.safetensors and cases.safetensors with F32 tensors
"input.0", "output.0", "input.1", "output.1", ...: the outputs of model.eval() under torch.no_grad()
in float32. Shared by tests/fixtures/make_fixtures.py (committed fixtures) and tests/live_check.py
(random networks generated on the fly).
"""

import math
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from export_model import load_model  # noqa: E402

CASES_FILE = "cases.safetensors"
# The C test's criterion: max abs error <= TOL * max(1, max |output|).
TOL = 1e-4


def randomize_batchnorm(module, gen):
    """Gives every BatchNorm2d non-trivial running stats (and affine parameters), so that BN folding
    is really tested: fresh modules have mean 0, var 1, weight 1, bias 0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.3)


def calibrate_batchnorm(module, x, gen):
    """Random BatchNorm statistics and affine parameters at the scale of the real activations, for
    deep networks. One pass over the batch x calibrates the BatchNorm layers in the order they run:
    each measures its own input (made by the layers before it, already calibrated), moves each
    channel's mean by N(0, 0.3) of its standard deviation, scales its variance by 0.5..2, and draws
    its affine weight from [0.5, 1.5] and bias from N(0, 0.3). So every BatchNorm's output stays of
    order 1, as in a trained network, while its statistics are as far from the defaults (mean 0,
    var 1, weight 1, bias 0, which hide folding bugs) as randomize_batchnorm's. Measuring all of
    them in one training-mode pass instead lets the perturbations compound from block to block, and
    a 250-layer network then differs from itself in float64 by 5e-3 of its output: no comparison of
    two float32 implementations within 1e-4 would mean anything."""
    def calibrate(m, inputs):
        t = inputs[0].detach()
        c = m.num_features
        mean = t.mean((0, 2, 3))
        var = t.var((0, 2, 3), unbiased=False)
        m.running_mean.copy_(mean + torch.randn(c, generator=gen) * 0.3 * var.sqrt())
        m.running_var.copy_(var * (torch.rand(c, generator=gen) * 1.5 + 0.5))
        if m.affine:
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.3)

    module.eval()
    hooks = [m.register_forward_pre_hook(calibrate) for m in module.modules()
             if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()


def scale_output(module, x, target_std=2.0):
    """Scales the weights and bias of the last Conv2d or Linear that runs so that the output on x
    has about target_std: torchvision's classifiers end in a layer initialised for training
    (std 0.01), whose outputs of 1e-2 would sit far inside an absolute tolerance of 1e-4. Exact
    when only ReLU, pooling, dropout and flattening follow that layer, as in every torchvision
    classifier; elsewhere it only changes the scale roughly, which is all it is for."""
    ran = []
    hooks = [m.register_forward_hook(lambda m, i, o: ran.append(m)) for m in module.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            y = module.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    std = float(y.std())
    if not ran or not math.isfinite(std) or std == 0.0:
        return
    with torch.no_grad():
        ran[-1].weight.mul_(target_std / std)
        if ran[-1].bias is not None:
            ran[-1].bias.mul_(target_std / std)


def randomize_weights(module, gen):
    """Re-initialises Conv2d and Linear with He-uniform weights (variance 2/fan_in) and biases in
    [-0.5, 0.5], so activations keep their scale through deep random nets (PyTorch's default init
    shrinks them by about sqrt(3) per layer, which would make the tolerance meaningless)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                bound = math.sqrt(6.0 / fan_in)
                m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)


def make_cases(module, shapes, gen):
    """Runs module.eval() on random inputs of each shape (batch first); returns the case tensors."""
    module.eval()
    cases = {}
    with torch.no_grad():
        for k, shape in enumerate(shapes):
            x = torch.randn(list(shape), generator=gen, dtype=torch.float32)
            y = module(x)
            if not torch.isfinite(y).all():
                raise ValueError(f"case {k}: output for input {list(shape)} is not finite")
            cases[f"input.{k}"] = x
            cases[f"output.{k}"] = y.to(torch.float32).contiguous()
    return cases


def write_cases(folder, cases, metadata=None):
    safetensors_io.save(os.path.join(folder, CASES_FILE), cases, metadata)


def case_pairs(folder):
    """Reads folder/cases.safetensors back as [(input, output)] numpy pairs, in index order."""
    tensors, _ = safetensors_io.load(os.path.join(folder, CASES_FILE))
    count = len(tensors) // 2
    if sorted(tensors) != sorted([f"input.{k}" for k in range(count)] +
                                 [f"output.{k}" for k in range(count)]):
        raise ValueError(f"{folder}: {CASES_FILE} must hold input.K / output.K pairs, got "
                         f"{sorted(tensors)}")
    return [(tensors[f"input.{k}"], tensors[f"output.{k}"]) for k in range(count)]


def check_folder(folder):
    """Re-reads a test folder with the Python reader (model.json, weights, cases) and checks that
    the rebuilt model reproduces every case within TOL, as the C test will. Returns the worst
    relative error; raises AssertionError on a mismatch."""
    model = load_model(folder)
    worst = 0.0
    with torch.no_grad():
        for k, (x, want) in enumerate(case_pairs(folder)):
            got = model(torch.from_numpy(x)).numpy()
            if got.shape != want.shape:
                raise AssertionError(f"{folder} case {k}: shape {got.shape}, expected {want.shape}")
            err = float(abs(got - want).max()) / max(1.0, float(abs(want).max()))
            if not err <= TOL:
                raise AssertionError(f"{folder} case {k}: error {err:g} > {TOL:g}")
            worst = max(worst, err)
    return worst


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
