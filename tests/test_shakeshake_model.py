"""Shake-Shake model semantics: architecture counts, the shake mix, fast ≡ reference."""
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from mltools.shakeshake.flops import shakeshake_flops  # noqa: E402
from mltools.shakeshake.model import (  # noqa: E402
    ReferenceShakeShake, build_model, count_parameters, fast_from_reference,
    fast_state_from_reference, reference_state_from_fast)
from mltools.shakeshake.peaks import find_peak  # noqa: E402
from mltools.shakeshake.shake import (  # noqa: E402
    FixedCoefficients, draw_coefficients, global_index_coefficients, shake_mix, shake_mix_traceable)

# Official architecture (16-channel stem, convolutions without bias, BN affine, FC with bias).
EXACT = {32: 2_923_162, 64: 11_653_978, 96: 26_192_922}
PAPER = {32: 2.9e6, 64: 11.7e6, 96: 26.2e6}


@pytest.mark.parametrize("width", [32, 64, 96])
def test_parameter_counts_exact_and_within_1pct_of_paper(width):
    torch.manual_seed(0)
    ref = build_model("reference", 26, width)
    fast = build_model("fast", 26, width)
    n = count_parameters(ref)
    assert n == EXACT[width]
    assert count_parameters(fast) == n
    assert abs(n - PAPER[width]) / PAPER[width] < 0.01


def test_no_conv_bias_and_16_channel_stem():
    m = build_model("reference", 26, 96)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert m.stem_conv.out_channels == 16 and m.fc.bias is not None


def test_analytic_flops_match_flop_counter_on_reference():
    """Oracle: torch's FlopCounterMode on the reference model (2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode
    for depth, width in [(26, 32), (14, 24)]:
        model = build_model("reference", depth, width)
        x = torch.randn(2, 3, 32, 32)
        with FlopCounterMode(display=False) as fwd:
            with torch.no_grad():
                model(x)
        with FlopCounterMode(display=False) as both:
            model(x).sum().backward()
        fl = shakeshake_flops(depth, width)
        assert fwd.get_total_flops() == 2 * fl.forward
        assert both.get_total_flops() == 2 * fl.train
    assert shakeshake_flops(26, 96).train == 22_660_471_296


def _reference_block(cin=4, cout=8, stride=2):
    from mltools.shakeshake.model import ReferenceBlock
    torch.manual_seed(1)
    return ReferenceBlock(0, cin, cout, stride)


def test_eval_output_is_the_half_half_mix():
    blk = _reference_block().eval()
    x = torch.randn(6, 4, 16, 16)
    expected = 0.5 * blk.branch1(x) + 0.5 * blk.branch2(x) + blk.shortcut(x)
    out1, out2 = blk(x, "image", None), blk(x, "image", None)
    assert torch.equal(out1, out2)                    # no randomness in eval
    assert torch.allclose(out1, expected, rtol=0, atol=1e-6)


def test_injected_alpha_beta_give_exact_branch_gradients():
    h1 = torch.randn(3, 5, 4, 4, requires_grad=True)
    h2 = torch.randn(3, 5, 4, 4, requires_grad=True)
    g = torch.randn(3, 5, 4, 4)
    a, b = torch.full((1, 1, 1, 1), 0.2), torch.full((1, 1, 1, 1), 0.9)
    for mix in (shake_mix, shake_mix_traceable):
        h1.grad = h2.grad = None
        y = mix(h1, h2, a, b)
        assert torch.allclose(y, 0.2 * h1 + 0.8 * h2, atol=1e-6)
        y.backward(g)
        assert torch.allclose(h1.grad, 0.9 * g, atol=1e-7)
        assert torch.allclose(h2.grad, 0.1 * g, atol=1e-7)


def test_backward_beta_is_independent_of_forward_alpha():
    """Recover α from the forward and β from the gradients, per image, through a real block."""
    torch.manual_seed(3)
    blk = _reference_block(cin=4, cout=4, stride=1).train()
    n = 1000
    x = torch.randn(n, 4, 4, 4)
    saved = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            saved[name] = output
        return hook
    blk.branch1.register_forward_hook(keep("h1"))
    blk.branch2.register_forward_hook(keep("h2"))
    y = blk(x, "image", None)
    g = torch.randn_like(y)
    y.backward(g)
    h1, h2 = saved["h1"].detach(), saved["h2"].detach()
    d = h1 - h2
    mask = d.abs() > 1e-2
    ratio = torch.where(mask, (y.detach() - x - h2) / torch.where(mask, d, torch.ones_like(d)), torch.nan)
    alpha = ratio.flatten(1).nanmedian(dim=1).values
    beta1 = (saved["h1"].grad / g).flatten(1).median(dim=1).values
    beta2 = 1 - (saved["h2"].grad / g).flatten(1).median(dim=1).values
    assert torch.allclose(beta1, beta2, atol=1e-4)        # β·g and (1−β)·g
    assert alpha.min() >= -1e-3 and alpha.max() <= 1 + 1e-3
    assert beta1.min() >= 0 and beta1.max() <= 1
    corr = torch.corrcoef(torch.stack([alpha, beta1]))[0, 1]
    assert abs(corr) < 0.15                               # β = α would give 1
    assert (alpha - beta1).abs().max() > 0.5
    assert beta1.std() > 0.2                              # not a constant 0.5


def test_per_image_alpha_differs_across_the_batch_and_batch_level_is_one_value():
    x = torch.randn(16, 3, 32, 32)
    a, b = draw_coefficients(16, "image", x)
    assert a.shape == (16, 1, 1, 1) and len(set(a.flatten().tolist())) > 8
    assert not torch.equal(a, b)
    a, b = draw_coefficients(16, "batch", x)
    assert a.shape == (1, 1, 1, 1)

    # ... and through the model: the mix of block 0 differs per image.
    torch.manual_seed(0)
    blk = _reference_block(cin=4, cout=4, stride=1).train()
    x = torch.randn(1, 4, 8, 8).repeat(16, 1, 1, 1)    # 16 identical images
    with torch.no_grad():
        y = blk(x, "image", None)
        assert len({round(v, 5) for v in y.flatten(1)[:, 0].tolist()}) > 8
        y = blk(x, "batch", None)
        assert len({round(v, 5) for v in y.flatten(1)[:, 0].tolist()}) == 1


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.2, 0.2, generator=gen)
            m.running_mean.uniform_(-0.1, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("second_conv", ["grouped", "split"])
@pytest.mark.parametrize("level", ["image", "batch"])
def test_fast_equals_reference_outputs_and_gradients(second_conv, level):
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    ref = ReferenceShakeShake(14, 8, level)
    _randomise_bn(ref, gen)
    fast = fast_from_reference(ref, second_conv)
    n = 8
    rows = n if level == "image" else 1
    coeffs = FixedCoefficients([torch.rand(rows, generator=gen) for _ in range(ref.num_blocks)],
                               [torch.rand(rows, generator=gen) for _ in range(ref.num_blocks)])
    ref.coefficient_source = fast.coefficient_source = coeffs
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    lr, lf = F.cross_entropy(ref(x), y), F.cross_entropy(fast(x), y)
    assert _rel(lf, lr) <= 1e-5
    lr.backward()
    lf.backward()
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}
    mapped = fast_state_from_reference(ref_grads)
    for k, p in fast.named_parameters():
        assert _rel(p.grad, mapped[k]) <= 1e-4, k
    # BN running statistics updated identically
    mapped_buf = fast_state_from_reference(ref.state_dict())
    for k, v in fast.state_dict().items():
        if "running" in k:
            assert _rel(v, mapped_buf[k]) <= 1e-5, k
    ref.eval()
    fast.eval()
    with torch.no_grad():
        assert _rel(fast(x), ref(x)) <= 1e-5


def test_weight_mapping_round_trips():
    ref = ReferenceShakeShake(8, 6)
    state = ref.state_dict()
    back = reference_state_from_fast(fast_state_from_reference(state))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    fast = build_model("fast", 8, 6)
    fast.load_state_dict(fast_state_from_reference(state))   # strict: shapes and names match


def test_global_index_coefficients_slice_the_global_draw():
    whole = global_index_coefficients(3, 8, 0, 1, seed=5)
    parts = [global_index_coefficients(3, 8, r, 2, seed=5) for r in range(2)]
    for blk in range(3):
        assert torch.equal(torch.cat([p.alphas[blk] for p in parts]), whole.alphas[blk])
        assert torch.equal(torch.cat([p.betas[blk] for p in parts]), whole.betas[blk])


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    for impl in ("reference", "fast"):
        model = build_model(impl, 8, 8).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(32, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (32,), generator=gen)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        before, after = losses[0], sum(losses[-3:]) / 3
        assert after < 0.8 * before, (impl, before, after)


def test_peak_table():
    h100 = find_peak("NVIDIA H100 80GB HBM3", "bf16")
    assert (h100.tflops, h100.gpu, h100.precision) == (989.4, "H100 SXM5", "bf16")
    assert "whitepaper" in h100.source and "989.4" in h100.source     # MFU names where its peak comes from
    assert find_peak("NVIDIA H100 PCIe", "tf32").tflops == 378.0
    assert find_peak("NVIDIA H200", "bf16").tflops == 989.0
    assert find_peak("NVIDIA A100-SXM4-80GB", "fp32").tflops == 19.5
    assert find_peak("NVIDIA L40S", "bf16") is None
    assert find_peak("NVIDIA H100 NVL", "bf16") is None
    assert find_peak("AMD EPYC", "fp32") is None


@pytest.mark.gpu
def test_fast_equals_reference_on_cuda_with_tf32_off():
    gen = torch.Generator().manual_seed(7)
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = False, True
    try:
        ref = ReferenceShakeShake(14, 16).cuda()
        _randomise_bn(ref.cpu(), gen)
        ref.cuda()
        fast = fast_from_reference(ref)
        coeffs = FixedCoefficients([torch.rand(16, generator=gen) for _ in range(ref.num_blocks)],
                                   [torch.rand(16, generator=gen) for _ in range(ref.num_blocks)])
        ref.coefficient_source = fast.coefficient_source = coeffs
        x = torch.randn(16, 3, 32, 32, generator=gen).cuda()
        y = torch.randint(0, 10, (16,), generator=gen).cuda()
        lr, lf = F.cross_entropy(ref(x), y), F.cross_entropy(fast(x), y)
        lr.backward()
        lf.backward()
        mapped = fast_state_from_reference({k: p.grad for k, p in ref.named_parameters()})
        for k, p in fast.named_parameters():
            assert _rel(p.grad, mapped[k]) <= 1e-4, k
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = old


@pytest.mark.slow
def test_fast_model_traces_as_one_graph():
    """The GPU path compiles the fast model: no graph break (fullgraph) in train
    or eval mode, with α/β drawn on the device inside the graph. Dynamo only
    (backend="eager"): inductor code generation would take minutes on a CPU."""
    torch.manual_seed(0)
    model = build_model("fast", 8, 4)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(4, 3, 32, 32)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x))
