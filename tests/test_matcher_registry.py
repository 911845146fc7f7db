"""The matcher registry and its library-side test double."""

import numpy as np
import pytest

from synthgen.audit.matchers import MATCHERS, REGISTRY, PixelProjectionMatcher, make_matcher
from synthgen.errors import UsageError


def test_registry_names_are_the_cli_choices():
    from synthgen.cli.commands import MATCHER_NAMES

    assert MATCHER_NAMES == MATCHERS == tuple(REGISTRY)
    with pytest.raises(UsageError, match="--matcher: 'nope' is not one of facenet-vggface2"):
        make_matcher("nope")


@pytest.mark.parametrize("name", ["iresnet", "onnx"])
def test_weight_matchers_need_weights(name):
    with pytest.raises(UsageError, match="--weights"):
        make_matcher(name, None)


def test_pixel_double_is_deterministic_and_discriminates(tmp_path):
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    a, b = make_matcher("pixels"), PixelProjectionMatcher()
    ea, eb = a.embed(imgs), b.embed(imgs)
    assert a.id == b.id and np.array_equal(ea, eb)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1, atol=1e-6)
    assert float(ea[0] @ ea[0]) == pytest.approx(1) and float(ea[0] @ ea[1]) < 0.5
    assert PixelProjectionMatcher(seed=1).id != a.id


def test_embeddings_matcher_reads_files_not_images(tmp_path):
    m = make_matcher("embeddings")
    with pytest.raises(UsageError, match="cannot embed images"):
        m.embed(np.zeros((1, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "e.npz", embeddings=np.eye(2, dtype=np.float32), keys=np.array(["a/1", "b/1"]),
             labels=np.array(["a", "b"]))
    emb, images = m.embed_path(tmp_path / "e.npz", "--synthetic")
    assert images is None and emb.keys == ["a/1", "b/1"]
