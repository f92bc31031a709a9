"""Parameter shapes of real models, from their architectures (torchvision is not installed here): the lists
that EMA and optimizer updates walk. Shared by tests/test_foreach.py and benchmarks/bench_foreach.py.

Each function returns the shapes in ``model.parameters()`` order; the totals are torchvision's / Hugging Face's
(asserted in the tests): mobilenet_v3_small 142 tensors, 2,542,856 values; resnet50 161, 25,557,032; GPT-2 small
148, 124,439,808 (the LM head is tied to the token embedding).
"""
from typing import List, Tuple

Shape = Tuple[int, ...]


def _conv_bn(cout: int, cin: int, k: int, groups: int = 1) -> List[Shape]:
    return [(cout, cin // groups, k, k), (cout,), (cout,)]


def _make_divisible(v: float, divisor: int = 8) -> int:  # torchvision's rounding of the SE widths
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenet_v3_small() -> List[Shape]:
    # (input, kernel, expanded, output, squeeze-excitation) per inverted residual block
    blocks = [(16, 3, 16, 16, True), (16, 3, 72, 24, False), (24, 3, 88, 24, False), (24, 5, 96, 40, True),
              (40, 5, 240, 40, True), (40, 5, 240, 40, True), (40, 5, 120, 48, True), (48, 5, 144, 48, True),
              (48, 5, 288, 96, True), (96, 5, 576, 96, True), (96, 5, 576, 96, True)]
    shapes = _conv_bn(16, 3, 3)
    for cin, k, exp, cout, se in blocks:
        if exp != cin:
            shapes += _conv_bn(exp, cin, 1)
        shapes += _conv_bn(exp, exp, k, groups=exp)  # depthwise
        if se:
            sq = _make_divisible(exp // 4)
            shapes += [(sq, exp, 1, 1), (sq,), (exp, sq, 1, 1), (exp,)]
        shapes += _conv_bn(cout, exp, 1)
    shapes += _conv_bn(576, 96, 1)
    return shapes + [(1024, 576), (1024,), (1000, 1024), (1000,)]


def resnet50() -> List[Shape]:
    shapes = _conv_bn(64, 3, 7)
    cin = 64
    for width, nblocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(nblocks):
            shapes += _conv_bn(width, cin, 1) + _conv_bn(width, width, 3) + _conv_bn(4 * width, width, 1)
            if b == 0:  # the downsample of the first block of each stage
                shapes += _conv_bn(4 * width, cin, 1)
            cin = 4 * width
    return shapes + [(1000, 2048), (1000,)]


def gpt2_small() -> List[Shape]:
    d, vocab, ctx = 768, 50257, 1024
    shapes: List[Shape] = [(vocab, d), (ctx, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


MODELS = {"mobilenet_v3_small": mobilenet_v3_small, "resnet50": resnet50, "gpt2_small": gpt2_small}
