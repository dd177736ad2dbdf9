"""Element-wise operation counts of the non-GEMM work (an add, multiply, compare, exp, rsqrt ... is
one op). Lowering uses them for nominal counts and the engine for executed counts, so they agree."""

from __future__ import annotations

BN_FWD_PER_ELEMENT = 8  # mean (1), variance (3), normalise (2), scale and shift (2)
BN_FWD_PER_CHANNEL = 8  # mean and variance divides (2), eps add and rsqrt (2), running stats (4)
BN_BWD_DATA_PER_ELEMENT = 9  # x̂ (2), Σdy and Σdy·x̂ (3), γ·inv_std·(dy − mean dy − x̂·mean dy·x̂) (4)
BN_BWD_WEIGHT_PER_ELEMENT = 5  # x̂ (2), dγ += dy·x̂ (2), dβ += dy (1)
SOFTMAX_CE_FWD_PER_LOGIT = 5  # max (1), subtract (1), exp (1), sum (1), normalise (1)
SOFTMAX_CE_FWD_PER_SAMPLE = 2  # log of the label's probability (1), batch mean (1)
SOFTMAX_CE_BWD_PER_LOGIT = 2  # subtract the one-hot label (1), scale by 1/N (1)
DROPOUT_FWD_PER_ELEMENT = 3  # a random number (1), compare with the drop probability (1), masked scale (1)
DROPOUT_BWD_PER_ELEMENT = 1  # masked scale of the error


def batchnorm_forward(elements: int, channels: int) -> int:
    return BN_FWD_PER_ELEMENT * elements + BN_FWD_PER_CHANNEL * channels


def batchnorm_backward_data(elements: int) -> int:
    return BN_BWD_DATA_PER_ELEMENT * elements


def batchnorm_backward_weight(elements: int) -> int:
    return BN_BWD_WEIGHT_PER_ELEMENT * elements


def maxpool_forward(outputs: int, window: int) -> int:
    return outputs * (window - 1)  # compares


def maxpool_backward(outputs: int) -> int:
    return outputs  # one scatter-add per output


def avgpool(outputs: int, window: int) -> int:
    return outputs * window  # forward: window sum and scale; backward: scale and spread


def softmax_cross_entropy_forward(logits: int, batch: int) -> int:
    return SOFTMAX_CE_FWD_PER_LOGIT * logits + SOFTMAX_CE_FWD_PER_SAMPLE * batch


def softmax_cross_entropy_backward(logits: int) -> int:
    return SOFTMAX_CE_BWD_PER_LOGIT * logits


def dropout_forward(elements: int) -> int:
    return DROPOUT_FWD_PER_ELEMENT * elements


def dropout_backward(elements: int) -> int:
    return DROPOUT_BWD_PER_ELEMENT * elements


def sgd_step(parameters: int, momentum: float, weight_decay: float) -> int:
    """Weight decay (2), momentum (2) and the step (2) per parameter."""
    return (2 + 2 * (weight_decay > 0) + 2 * (momentum > 0)) * parameters
