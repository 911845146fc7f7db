"""A learned face-image quality score, offline: SER-FIQ (Terhörst et al., CVPR 2020) on facenet.

SER-FIQ needs no quality labels: a recognizer trained with dropout is run m times with random
dropout masks; the quality is how stable the embedding stays, q = 2 sigmoid(-(2 / m^2) sum over
pairs i < j of ||e_i - e_j||), e unit embeddings (higher is better, in (0, 1)). facenet's
Inception-ResNet-v1 (facenet-pytorch's InceptionResnetV1, which is what `facenet-casia` and
`facenet-vggface2` build) has dropout (p = 0.6, as trained) between its pooled 1792-d feature and
its last linear + batch-norm layers, so one forward pass to the pooled feature, then m masked
passes through the two last layers (a 1792 x 512 product each) give the score: about the cost of
embedding the image once more.

Deterministic: masks come from a torch generator seeded with `seed`, drawn per batch in key
order, so the same set, batch size and seed give the same scores.
"""

from __future__ import annotations

import numpy as np

PASSES = 100  # m, as in the paper


def supports(matcher) -> bool:
    """Whether the matcher is a facenet InceptionResnetV1 with its dropout layer."""
    model = getattr(matcher, "model", None)
    return all(hasattr(model, a) for a in ("dropout", "last_linear", "last_bn"))


def serfiq(matcher, images: np.ndarray, passes: int = PASSES, generator=None) -> np.ndarray:
    """[N, H, W, 3] uint8 crops (resized to the matcher's input) -> [N] SER-FIQ scores."""
    import torch
    import torch.nn.functional as F

    model = matcher.model
    feats = []
    hook = model.dropout.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach()))
    try:
        matcher.embed(images)
    finally:
        hook.remove()
    x = feats[0].flatten(1).float()  # [N, 1792], the input of the dropout layer
    p = float(model.dropout.p)
    n, d = x.shape
    keep = torch.rand((n, passes, d), generator=generator, device=x.device) >= p
    with torch.no_grad():
        z = (x[:, None, :] * keep / (1 - p)).reshape(n * passes, d)
        e = F.normalize(model.last_bn(model.last_linear(z)), dim=1).reshape(n, passes, -1)
        g = e @ e.transpose(1, 2)
        dist = torch.sqrt(torch.clamp(2 - 2 * g, min=0))
        pair_sum = torch.triu(dist, diagonal=1).sum((1, 2))
        q = 2 * torch.sigmoid(-(2 / passes**2) * pair_sum)
    return q.cpu().numpy().astype(np.float64)


def serfiq_set(images, matcher, batch_size: int = 64, seed: int = 0, progress: bool = False) -> dict:
    """key -> SER-FIQ score for every readable image of an audit ImageSet."""
    import torch
    from tqdm import tqdm

    from synthgen.audit.embed import _resize

    gen = torch.Generator(device=getattr(matcher, "device", "cpu"))
    gen.manual_seed(seed)
    out = {}
    n = len(images.keys)
    bar = tqdm(total=n, unit="img", desc="quality: SER-FIQ", disable=not progress, dynamic_ncols=True)
    for s in range(0, n, batch_size):
        idx, batch = [], []
        for i in range(s, min(s + batch_size, n)):
            try:
                batch.append(_resize(images.read(i), matcher.input_size))
                idx.append(i)
            except Exception:  # an unreadable crop gets no score (its other measures say so)
                continue
        if batch:
            for i, q in zip(idx, serfiq(matcher, np.stack(batch), generator=gen)):
                out[images.keys[i]] = float(q)
        bar.update(min(batch_size, n - s))
    bar.close()
    return out
