"""Loss values on hand-computed cases, and against MONAI where the conventions match."""

from __future__ import annotations

import math

import pytest
import torch

from attnseg.losses import (
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    build_loss,
    deep_supervision_weights,
    dice_ce_loss,
    dice_focal_loss,
    downsample_target,
    focal_loss,
)

L3 = math.log(3.0)


def _two_voxels():
    """Two voxels, both with softmax probabilities (0.75, 0.25); labels 0 and 1."""
    logits = torch.tensor([[[[L3, L3]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])  # (1, 1, 2)
    return logits, labels


# --- hand-computed ----------------------------------------------------------------------------------
def test_softmax_dice_by_hand():
    logits, labels = _two_voxels()
    # class 0: p=(.75,.75), t=(1,0): 2*.75/(1.5+1) = .6 -> .4 ; class 1: 2*.25/(.5+1) = 1/3 -> 2/3
    d = DiceLoss("softmax", smooth_nr=0, smooth_dr=0)
    assert d(logits, labels).item() == pytest.approx((0.4 + 2 / 3) / 2, abs=1e-6)
    d = DiceLoss("softmax", include_background=False, smooth_nr=0, smooth_dr=0)
    assert d(logits, labels).item() == pytest.approx(2 / 3, abs=1e-6)
    d = DiceLoss("softmax", class_weights=[1, 3], smooth_nr=0, smooth_dr=0)
    assert d(logits, labels).item() == pytest.approx((0.4 + 3 * 2 / 3) / 4, abs=1e-6)
    # (N, 1, *spatial) labels are accepted too
    assert d(logits, labels[:, None]).item() == pytest.approx((0.4 + 3 * 2 / 3) / 4, abs=1e-6)


def test_smoothing_makes_empty_class_zero_loss():
    # class 1 absent and predicted ~absent: 0/0 -> with smoothing the Dice is ~1 (loss ~0)
    logits = torch.tensor([[[[20.0, 20.0]], [[-20.0, -20.0]]]])
    labels = torch.zeros(1, 1, 2, dtype=torch.long)
    d = DiceLoss("softmax", include_background=False, smooth_nr=1.0, smooth_dr=1.0)
    assert d(logits, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_batch_dice_versus_per_sample_by_hand():
    logits = torch.zeros(2, 1, 1, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1, 1]]], [[[0, 0]]]])
    per_sample = DiceLoss("sigmoid", smooth_nr=0, smooth_dr=1e-12)(logits, target).item()
    batch = DiceLoss("sigmoid", batch_dice=True, smooth_nr=0, smooth_dr=0)(logits, target).item()
    # sample A: 2*1/(1+2) -> loss 1/3; sample B: 0/(1+0) -> loss 1; batch: 2*1/(2+2) -> loss 1/2
    assert per_sample == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    assert batch == pytest.approx(0.5, abs=1e-6)


def test_focal_by_hand():
    x = torch.zeros(1, 1, 1)  # p = 0.5
    one, zero = torch.ones(1, 1, 1), torch.zeros(1, 1, 1)
    assert focal_loss(x, one, activation="sigmoid").item() == pytest.approx(0.25 * math.log(2), abs=1e-6)
    assert focal_loss(x, one, activation="sigmoid", alpha=0.25).item() == pytest.approx(
        0.25 * 0.25 * math.log(2), abs=1e-6
    )
    assert focal_loss(x, zero, activation="sigmoid", alpha=0.25).item() == pytest.approx(
        0.75 * 0.25 * math.log(2), abs=1e-6
    )
    logits, labels = _two_voxels()
    # voxel 0: p_t=.75 -> .25^2 * -log .75 ; voxel 1: p_t=.25 -> .75^2 * -log .25 ; mean over voxels
    expected = (0.0625 * -math.log(0.75) + 0.5625 * -math.log(0.25)) / 2
    assert focal_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # scalar alpha, softmax: (1 - alpha) for background, alpha for the others
    expected_a = (0.75 * 0.0625 * -math.log(0.75) + 0.25 * 0.5625 * -math.log(0.25)) / 2
    assert focal_loss(logits, labels, alpha=0.25).item() == pytest.approx(expected_a, abs=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 4, generator=g)
    labels = torch.randint(0, 3, (2, 5, 4), generator=g)
    ce = CrossEntropyLoss()(logits, labels).item()
    assert FocalLoss(gamma=0.0)(logits, labels).item() == pytest.approx(ce, abs=1e-6)


def test_cross_entropy_by_hand():
    logits, labels = _two_voxels()
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert CrossEntropyLoss()(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # weighted mean: (1 * -log .75 + 3 * -log .25) / (1 + 3)
    expected_w = (-math.log(0.75) - 3 * math.log(0.25)) / 4
    assert CrossEntropyLoss(class_weights=[1, 3])(logits, labels).item() == pytest.approx(
        expected_w, abs=1e-6
    )


def test_combined_terms_add_up_and_are_recorded():
    logits, labels = _two_voxels()
    loss = dice_ce_loss(lambda_dice=2.0, lambda_ce=0.5, smooth_nr=0, smooth_dr=0)
    value = loss(logits, labels).item()
    dice = (0.4 + 2 / 3) / 2
    ce = (-math.log(0.75) - math.log(0.25)) / 2
    assert value == pytest.approx(2 * dice + 0.5 * ce, abs=1e-6)
    assert loss.last["dice"] == pytest.approx(dice, abs=1e-6)
    assert loss.last["ce"] == pytest.approx(ce, abs=1e-6)


def test_losses_compute_in_float32_under_bf16():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    loss = build_loss("dice_ce")
    full = loss(logits, labels)
    half = loss(logits.bfloat16(), labels)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), abs=2e-2)


def test_bad_targets_raise_clear_errors():
    logits = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="does not fit 2 classes"):
        DiceLoss()(logits, torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match="expected one binary channel"):
        DiceLoss("sigmoid")(logits, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="class_weights has 3"):
        DiceLoss(class_weights=[1, 1, 1])(logits, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown"):
        build_loss("tversky")


# --- deep supervision -------------------------------------------------------------------------------
def test_deep_supervision_weights():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(3, include_lowest=False) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(1, include_lowest=False) == [1.0]


def test_downsample_target_nearest_and_max():
    labels = torch.arange(25).reshape(1, 5, 5)
    down = downsample_target(labels, (3, 3), 2)
    assert down.tolist() == [[[0, 2, 4], [10, 12, 14], [20, 22, 24]]]
    regions = torch.zeros(1, 2, 5, 5, dtype=torch.uint8)
    regions[0, 0, 1, 1] = 1  # a one-voxel region inside block (0, 0): nearest would lose it
    regions[0, 1, 4, 4] = 1  # in the partial last block
    down = downsample_target(regions, (3, 3), 2)
    assert down.dtype == torch.uint8
    assert down[0, 0].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert down[0, 1].tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="expected spatial size"):
        downsample_target(labels, (4, 4), 2)


def test_deep_supervision_loss_is_weighted_sum_of_scales():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    outs = [torch.randn(2, 3, 8 // 2**i, 8 // 2**i, generator=g) for i in range(3)]
    base = DiceLoss()
    ds = DeepSupervisionLoss(base)
    expected = sum(
        w * base(o, labels[:, :: 2**i, :: 2**i]).item()
        for i, (o, w) in enumerate(zip(outs, [4 / 7, 2 / 7, 1 / 7]))
    )
    assert ds(outs, labels).item() == pytest.approx(expected, abs=1e-6)
    # a single tensor (eval mode) goes straight through
    assert ds(outs[0], labels).item() == pytest.approx(base(outs[0], labels).item(), abs=1e-7)


def test_deep_supervision_with_model_outputs_sigmoid_regions():
    from attnseg.models import AttentionUNet

    model = AttentionUNet(2, 1, 2, features=(4, 8, 16, 16), deep_supervision=True).train()
    x = torch.randn(1, 1, 20, 18)
    outs = model(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(20, 18), (10, 9), (5, 5)]
    regions = (torch.rand(1, 2, 20, 18) > 0.7).to(torch.uint8)
    loss = DeepSupervisionLoss(dice_focal_loss("sigmoid"))
    assert loss.target_mode == "max"
    value = loss(outs, regions)
    value.backward()
    assert torch.isfinite(value)
    assert all(p.grad is not None for p in model.ds_heads.parameters())


# --- against MONAI ----------------------------------------------------------------------------------
@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 6, 5, 4, generator=g) * 2
    labels = torch.randint(0, 4, (2, 6, 5, 4), generator=g)
    labels[1][labels[1] == 3] = 2  # class 3 absent from sample 1: exercises the smoothing terms
    regions = (torch.rand(2, 4, 6, 5, 4, generator=g) > 0.6).float()
    return logits, labels, regions


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_matches_monai(batch, include_background, batch_dice):
    monai = pytest.importorskip("monai.losses")
    logits, labels, regions = batch
    ours = DiceLoss("softmax", include_background=include_background, batch_dice=batch_dice)
    ref = monai.DiceLoss(
        softmax=True, to_onehot_y=True, include_background=include_background, batch=batch_dice
    )
    assert ours(logits, labels).item() == pytest.approx(ref(logits, labels[:, None]).item(), abs=1e-6)
    ours = DiceLoss("sigmoid", include_background=include_background, batch_dice=batch_dice)
    ref = monai.DiceLoss(sigmoid=True, include_background=include_background, batch=batch_dice)
    assert ours(logits, regions).item() == pytest.approx(ref(logits, regions).item(), abs=1e-6)


def test_weighted_dice_matches_monai_when_weights_average_one(batch):
    # MONAI multiplies each class loss by w and averages over classes; we take sum(w L)/sum(w):
    # the same number when mean(w) == 1.
    monai = pytest.importorskip("monai.losses")
    logits, labels, _ = batch
    w = [0.4, 1.2, 1.6, 0.8]
    ours = DiceLoss(class_weights=w)(logits, labels).item()
    ref = monai.DiceLoss(softmax=True, to_onehot_y=True, weight=torch.tensor(w))(
        logits, labels[:, None]
    ).item()
    assert ours == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_focal_matches_monai(batch, alpha):
    monai = pytest.importorskip("monai.losses")
    logits, _, regions = batch
    ours = FocalLoss("sigmoid", gamma=2.0, alpha=alpha)(logits, regions).item()
    ref = monai.FocalLoss(gamma=2.0, alpha=alpha, use_softmax=False)(logits, regions).item()
    assert ours == pytest.approx(ref, abs=1e-6)


def test_softmax_focal_is_monai_times_classes(batch):
    # (MONAI's include_background=False drops channel 0 *before* the softmax, a different
    # distribution; ours keeps the full softmax and drops the background term, see the next test.)
    monai = pytest.importorskip("monai.losses")
    logits, labels, _ = batch
    alpha = [0.1, 0.3, 0.3, 0.3]
    ours = FocalLoss(gamma=1.5, alpha=alpha)(logits, labels).item()
    ref = monai.FocalLoss(gamma=1.5, alpha=torch.tensor(alpha), use_softmax=True, to_onehot_y=True)
    assert ours == pytest.approx(4 * ref(logits, labels[:, None]).item(), abs=1e-6)


def test_softmax_focal_without_background_by_hand():
    logits, labels = _two_voxels()
    # only voxel 1 (label 1, p_t = .25 under the full softmax) contributes; mean over both voxels
    expected = 0.5625 * -math.log(0.25) / 2
    assert focal_loss(logits, labels, include_background=False).item() == pytest.approx(expected, abs=1e-6)


def test_dice_ce_matches_monai(batch):
    monai = pytest.importorskip("monai.losses")
    logits, labels, _ = batch
    w = [0.4, 1.2, 1.6, 0.8]
    ours = dice_ce_loss(lambda_dice=0.7, lambda_ce=1.3, class_weights=w)(logits, labels).item()
    ref = monai.DiceCELoss(
        softmax=True, to_onehot_y=True, weight=torch.tensor(w), lambda_dice=0.7, lambda_ce=1.3
    )
    assert ours == pytest.approx(ref(logits, labels[:, None]).item(), abs=1e-6)
    ours = dice_ce_loss(include_background=False, batch_dice=True)(logits, labels).item()
    ref = monai.DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)
    assert ours == pytest.approx(ref(logits, labels[:, None]).item(), abs=1e-6)
    # one sigmoid channel: binary cross-entropy in both
    ours = dice_ce_loss("sigmoid")(logits[:, :1], labels[:, None].clamp(max=1).float()).item()
    ref = monai.DiceCELoss(sigmoid=True)(logits[:, :1], labels[:, None].clamp(max=1).float()).item()
    assert ours == pytest.approx(ref, abs=1e-6)


def test_dice_focal_matches_monai(batch):
    monai = pytest.importorskip("monai.losses")
    logits, labels, regions = batch
    ours = dice_focal_loss("sigmoid", gamma=2.0, alpha=0.25, lambda_focal=2.0)(logits, regions).item()
    ref = monai.DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25, lambda_focal=2.0)(logits, regions).item()
    assert ours == pytest.approx(ref, abs=1e-6)
    # (MONAI's DiceFocalLoss(softmax=True) still uses a sigmoid focal term; no softmax comparison.)


# --- ignore label: ignored voxels take no part (value and gradient) ----------------------------------
IGNORE_CASES = [
    ("dice", {"batch_dice": True}),
    ("dice", {"batch_dice": False, "include_background": False}),
    ("ce", {}),
    ("ce", {"class_weights": [0.5, 1.0, 2.0]}),
    ("focal", {"gamma": 2.0, "alpha": 0.25}),
    ("dice_ce", {"batch_dice": True, "include_background": False}),
    ("dice_focal", {"batch_dice": False}),
]


def _sparse_batch(activation: str, seed: int = 0):
    """Logits (2, 3, 4, 5, 6), a target with about a third of the voxels ignored, the ignore value
    and the bool mask (2, 4, 5, 6) of the ignored voxels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g)
    ignored = torch.rand(2, 4, 5, 6, generator=g) < 0.35
    if activation == "softmax":
        target = torch.randint(0, 3, (2, 4, 5, 6), generator=g)
        return logits, target.masked_fill(ignored, 3), 3, ignored
    target = (torch.rand(2, 3, 4, 5, 6, generator=g) < 0.4).to(torch.uint8)
    return logits, target.masked_fill(ignored.unsqueeze(1), 255), 255, ignored


def _kept(logits, target, ignored, sample, activation):
    """One sample's annotated voxels as a (1, K, M) / (1, M) or (1, K, M) problem."""
    keep = ~ignored[sample]
    lg = logits[sample][:, keep].unsqueeze(0)
    tg = target[sample][keep] if activation == "softmax" else target[sample][:, keep]
    return lg, tg.unsqueeze(0)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize(("name", "options"), IGNORE_CASES)
def test_ignored_voxels_are_as_if_absent(activation, name, options):
    """The loss with ignored voxels equals the loss of the annotated voxels alone (concatenated over
    the batch for batch Dice, CE and focal; per sample for per-sample Dice)."""
    if activation == "sigmoid" and "class_weights" in options:
        options = {"class_weights": [1.0, 2.0, 3.0]}
    logits, target, ignore, ignored = _sparse_batch(activation)
    value = build_loss(name, activation, ignore_index=ignore, **options)(logits, target)
    plain = build_loss(name, activation, **options)
    per_sample = [_kept(logits, target, ignored, i, activation) for i in range(2)]
    if name in ("dice", "dice_focal") and not options.get("batch_dice", False):
        if name == "dice":
            expected = sum(plain(lg, tg) for lg, tg in per_sample) / 2
        else:  # per-sample Dice, voxel-mean focal
            dice = DiceLoss(activation, batch_dice=False)
            focal = FocalLoss(activation)
            both_lg = torch.cat([lg for lg, _ in per_sample], -1)
            both_tg = torch.cat([tg for _, tg in per_sample], -1)
            expected = sum(dice(lg, tg) for lg, tg in per_sample) / 2 + focal(both_lg, both_tg)
    else:
        both_lg = torch.cat([lg for lg, _ in per_sample], -1)
        both_tg = torch.cat([tg for _, tg in per_sample], -1)
        expected = plain(both_lg, both_tg)
    assert float(value) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize(("name", "options"), IGNORE_CASES)
def test_ignored_voxels_change_neither_value_nor_gradient(activation, name, options):
    if activation == "sigmoid" and "class_weights" in options:
        options = {"class_weights": [1.0, 2.0, 3.0]}
    logits, target, ignore, ignored = _sparse_batch(activation, seed=1)
    loss = build_loss(name, activation, ignore_index=ignore, **options)
    other = logits.clone()
    other[ignored.unsqueeze(1).expand_as(other)] = 50.0 * torch.randn(int(ignored.sum()) * 3)
    a, b = logits.clone().requires_grad_(), other.clone().requires_grad_()
    va, vb = loss(a, target), loss(b, target)
    va.backward()
    vb.backward()
    assert float(va.detach()) == pytest.approx(float(vb.detach()), rel=1e-6)
    mask = ignored.unsqueeze(1).expand_as(logits)
    assert torch.count_nonzero(a.grad[mask]) == 0 and torch.count_nonzero(b.grad[mask]) == 0
    torch.testing.assert_close(a.grad[~mask], b.grad[~mask], rtol=1e-5, atol=1e-8)
    assert torch.count_nonzero(a.grad[~mask]) > 0


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_a_patch_with_every_voxel_ignored_gives_zero(activation):
    logits, target, ignore, _ = _sparse_batch(activation, seed=2)
    target = torch.full_like(target, ignore)
    x = logits.clone().requires_grad_()
    for name in ("ce", "focal"):
        value = build_loss(name, activation, ignore_index=ignore)(x, target)
        value.backward()
        assert float(value.detach()) == 0.0 and torch.count_nonzero(x.grad) == 0


def test_deep_supervision_passes_the_ignore_value_to_every_scale():
    """Nearest down-sampling keeps the ignore value, so the coarse scale ignores those voxels too."""
    logits, target, ignore, _ = _sparse_batch("softmax", seed=3)
    coarse = torch.randn(2, 3, 2, 3, 3)
    loss = DeepSupervisionLoss(dice_ce_loss("softmax", batch_dice=True, ignore_index=ignore))
    value = loss([logits, coarse], target)
    inner = dice_ce_loss("softmax", batch_dice=True, ignore_index=ignore)
    expected = (2 / 3) * inner(logits, target) + (1 / 3) * inner(coarse, target[:, ::2, ::2, ::2])
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
