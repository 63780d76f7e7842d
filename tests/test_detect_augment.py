"""Detection augmentation: every transform checked on boxes (and pixels) whose result is known."""

from __future__ import annotations

import random

import pytest
import torch

from nostride.data.detection.augment import (apply_hsv_gains, box_candidates, flip_lr, flip_ud, hsv8_to_rgb, mixup,
                                             mosaic4, perspective_matrix, random_perspective, rgb_to_hsv8,
                                             transform_boxes, warp_image, xywhn_to_xyxy, xyxy_to_xywhn)


def _square_image(h: int, w: int, box: tuple[int, int, int, int], value: int = 255) -> torch.Tensor:
    img = torch.zeros((3, h, w), dtype=torch.uint8)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = value
    return img


class _Fixed(random.Random):
    """A random source returning given values from ``uniform`` (in call order)."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def uniform(self, a, b):  # noqa: D401
        return self.values.pop(0)


def test_flip_lr_moves_box_to_one_minus_x():
    img = _square_image(10, 20, (0, 0, 5, 10))
    labels = torch.tensor([[3.0, 0.2, 0.5, 0.1, 0.4]])
    out, lab = flip_lr(img, labels)
    assert torch.allclose(lab, torch.tensor([[3.0, 0.8, 0.5, 0.1, 0.4]]))
    assert out[:, :, 15:].min() == 255 and out[:, :, :15].max() == 0  # the white strip moved right
    assert torch.equal(labels, torch.tensor([[3.0, 0.2, 0.5, 0.1, 0.4]]))  # input untouched


def test_flip_ud_moves_box_to_one_minus_y():
    img = _square_image(20, 10, (0, 0, 10, 4))
    out, lab = flip_ud(img, torch.tensor([[0.0, 0.5, 0.1, 1.0, 0.2]]))
    assert torch.allclose(lab, torch.tensor([[0.0, 0.5, 0.9, 1.0, 0.2]]))
    assert out[:, 16:].min() == 255 and out[:, :16].max() == 0


def test_translation_moves_pixels_and_box_by_the_offset():
    img = _square_image(64, 64, (10, 20, 30, 40))
    dx, dy = 7, -5
    M = perspective_matrix((64, 64), (64, 64), translate=(0.5 + dx / 64, 0.5 + dy / 64))
    out = warp_image(img, M, (64, 64))
    expected = torch.full_like(img, 114)
    expected[:, :64 + dy, dx:] = img[:, -dy:, : 64 - dx]  # shifted copy; uncovered strips get the fill
    assert torch.equal(out, expected)
    box = transform_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), M, (64, 64))
    assert torch.allclose(box, torch.tensor([[17.0, 15.0, 37.0, 35.0]]))


def test_scale_and_rotation_move_boxes_as_computed():
    M = perspective_matrix((100, 100), (100, 100), scale=2.0)  # about the centre (50, 50)
    box = transform_boxes(torch.tensor([[40.0, 45.0, 60.0, 50.0]]), M, (100, 100))
    assert torch.allclose(box, torch.tensor([[30.0, 40.0, 70.0, 50.0]]))
    # 90 degrees counter-clockwise (image y down): (x, y) relative to the centre -> (y, -x)
    M = perspective_matrix((100, 100), (100, 100), degrees=90.0)
    box = transform_boxes(torch.tensor([[60.0, 40.0, 80.0, 45.0]]), M, (100, 100))
    assert torch.allclose(box, torch.tensor([[40.0, 20.0, 45.0, 40.0]]), atol=1e-5)


def test_box_pushed_outside_is_dropped_by_the_candidate_filter():
    labels = torch.tensor([[1.0, 10.0, 10.0, 30.0, 30.0], [2.0, 40.0, 40.0, 60.0, 60.0]])
    img = torch.zeros((3, 64, 64), dtype=torch.uint8)
    # values drawn in order: perspective x, y, angle, scale, shear x, y, translate x, y
    rng = _Fixed([0, 0, 0, 1.0, 0, 0, 0.5 - 35 / 64, 0.5])  # shift left by 35 px: the first box leaves
    out, kept = random_perspective(img, labels, degrees=0, translate=1, scale=0, shear=0, rng=rng)
    assert kept.shape == (1, 5) and kept[0, 0] == 2
    assert torch.allclose(kept[0, 1:], torch.tensor([5.0, 40.0, 25.0, 60.0]))


def test_box_candidates_thresholds():
    old = torch.tensor([[0.0, 0, 10, 10]] * 4)
    new = torch.tensor([[0.0, 0, 10, 10],  # unchanged: kept
                        [0.0, 0, 2, 10],  # 2 px wide: not > 2, dropped
                        [0.0, 0, 3, 3],  # 9 % of the area: dropped
                        [0.0, 0, 63, 3]])  # aspect ratio 21 >= 20: dropped
    assert box_candidates(old, new).tolist() == [True, False, False, False]
    assert box_candidates(old[:1], torch.tensor([[0.0, 0, 3, 4]])).tolist() == [True]  # 12 % > 10 %


def test_identity_perspective_leaves_sample_unchanged():
    img = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    labels = torch.tensor([[0.0, 4.0, 5.0, 20.0, 30.0]])
    out, lab = random_perspective(img, labels, degrees=0, translate=0, scale=0, shear=0, perspective=0)
    assert torch.equal(out, img) and torch.equal(lab, labels)


def test_mosaic_border_crops_to_half_size_and_keeps_boxes_on_their_pixels():
    s = 32
    imgs = [_square_image(s, s, (8, 8, 24, 24), value=v) for v in (50, 100, 150, 200)]
    labels = [torch.tensor([[float(i), 8.0, 8.0, 24.0, 24.0]]) for i in range(4)]
    canvas, lab = mosaic4(imgs, labels, s, center=(s, s))
    assert canvas.shape == (3, 2 * s, 2 * s)
    assert canvas[0, 16, 16] == 50 and canvas[0, 16, s + 16] == 100 and canvas[0, s + 16, 16] == 150
    assert canvas[0, s + 16, s + 16] == 200
    assert torch.equal(lab[:, 1:], torch.tensor([[8.0, 8, 24, 24], [40, 8, 56, 24], [8, 40, 24, 56], [40, 40, 56, 56]]))
    # a centre near the corner cuts the tiles; labels clipped to the canvas
    canvas, lab = mosaic4(imgs, labels, s, center=(10, 50))
    assert lab[:, 1:].min() >= 0 and lab[:, 1:].max() <= 2 * s
    out, kept = random_perspective(canvas, lab, degrees=0, translate=0, scale=0, shear=0, border=(-s // 2, -s // 2))
    assert out.shape == (3, s, s)
    for c, x1, y1, x2, y2 in kept.tolist():  # every kept box still covers its tile's square
        assert out[0, int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1].float().mean() == 50 * (c + 1)


def test_hsv_round_trip_and_gains():
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    assert (hsv8_to_rgb(rgb_to_hsv8(img)).int() - img.int()).abs().max() <= 4  # 8-bit HSV quantisation
    pure = torch.tensor([[[255]], [[0]], [[0]]], dtype=torch.uint8)  # red: hue 0 stays 0 under any hue gain
    assert apply_hsv_gains(pure, (1.3, 1.0, 1.0)).flatten().tolist() == [255, 0, 0]
    grey = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    assert apply_hsv_gains(grey, (1.0, 1.0, 0.5)).unique().tolist() == [50]  # value halves
    colour = torch.tensor([[[200]], [[50]], [[50]]], dtype=torch.uint8)
    assert apply_hsv_gains(colour, (1.0, 0.0, 1.0)).flatten().tolist() == [200, 200, 200]  # no saturation: grey
    blue = torch.tensor([[[0]], [[0]], [[255]]], dtype=torch.uint8)  # hue 120 -> 60 (green) with gain 0.5
    assert apply_hsv_gains(blue, (0.5, 1.0, 1.0)).flatten().tolist() == [0, 255, 0]


def test_mixup_blends_and_concatenates():
    a, b = torch.full((3, 4, 4), 100, dtype=torch.uint8), torch.full((3, 4, 4), 201, dtype=torch.uint8)
    img, lab = mixup(a, torch.ones(1, 5), b, torch.zeros(2, 5), r=0.5)
    assert img.unique().tolist() == [150]  # 150.5 truncated
    assert lab.shape == (3, 5)


def test_label_conversions_round_trip():
    x = torch.tensor([[0.5, 0.25, 0.2, 0.1]])
    xyxy = xywhn_to_xyxy(x, 100, 200, padw=10, padh=0)
    assert torch.allclose(xyxy, torch.tensor([[50.0, 40.0, 70.0, 60.0]]))
    assert torch.allclose(xyxy_to_xywhn(xyxy - torch.tensor([10.0, 0, 10, 0]), 100, 200), x)
    clipped = xyxy_to_xywhn(torch.tensor([[-5.0, 0, 50, 100]]), 100, 100, clip=True, eps=1e-3)
    assert torch.allclose(clipped, torch.tensor([[0.25, 0.5, 0.5, 0.99999]]), atol=1e-5)


@pytest.mark.parametrize("perspective", [0.0, 0.001])
def test_random_perspective_boxes_stay_on_their_pixels(perspective):
    """A white square's box after a random warp encloses the warped square tightly."""
    img = _square_image(96, 96, (30, 30, 60, 60))
    labels = torch.tensor([[0.0, 30.0, 30.0, 60.0, 60.0]])
    rng = random.Random(3)
    for _ in range(10):
        out, lab = random_perspective(img, labels, degrees=20, translate=0.1, scale=0.3, shear=5,
                                      perspective=perspective, rng=rng)
        ys, xs = torch.nonzero(out[0] > 200, as_tuple=True)
        if len(lab) == 0:
            continue
        x1, y1, x2, y2 = lab[0, 1:].tolist()
        assert abs(xs.min().item() - x1) <= 2 and abs(ys.min().item() - y1) <= 2
        assert abs(xs.max().item() + 1 - x2) <= 2 and abs(ys.max().item() + 1 - y2) <= 2


def test_hsv_gains_equal_the_per_pixel_formula_bit_for_bit():
    """apply_hsv_gains evaluates parts of hsv8_to_rgb on table entries: the same uint8 result as
    mapping every pixel's 8-bit HSV through the lookup tables and converting back."""
    from nostride.data.detection.augment.color import hsv_luts, rgb_to_hsv8

    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 61, 67), generator=g, dtype=torch.uint8)
    img[:, :4] = (torch.arange(4 * 67) % 256).to(torch.uint8).view(4, 67)  # greys (S = 0)
    img[0, 4:6] = 255  # saturated reds: the hue wrap-around
    for gains in [(1.0, 1.0, 1.0), (0.5, 1.5, 0.7), (1.49, 0.51, 1.38), (1.013, 0.0, 2.0)] + [
            tuple(float(v) for v in torch.rand(3, generator=g) + 0.5) for _ in range(20)]:
        hsv = rgb_to_hsv8(img).long()
        hsv[1] += 256
        hsv[2] += 512
        expected = hsv8_to_rgb(hsv_luts(gains).flatten().take(hsv))
        assert torch.equal(apply_hsv_gains(img, gains), expected), gains

