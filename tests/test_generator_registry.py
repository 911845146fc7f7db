"""The generator registry and its library-side test double (the dummy backend)."""

import json

import numpy as np
import pytest

from synthgen.errors import DataError, UsageError
from synthgen.generators import (backends, convert_generator, load_generator, to_uint8,
                                 write_random_generator)


def test_registry_knows_both_backends_and_sniffs_files(tmp_path, micro_pkl):
    assert backends() == ["stylegan2-ada", "dummy"]
    d = write_random_generator(tmp_path / "d.json", "dummy", seed=3, c_dim=2)
    assert load_generator(d).backend == "dummy" and load_generator(micro_pkl).backend == "stylegan2-ada"
    (tmp_path / "x.bin").write_bytes(b"nothing we read")
    with pytest.raises(DataError, match="no generator backend reads this file"):
        load_generator(tmp_path / "x.bin")
    with pytest.raises(UsageError, match="no checkpoint format"):
        convert_generator(d, tmp_path / "out.pt")


def test_dummy_is_deterministic_batch_free_and_class_sensitive(tmp_path):
    g = load_generator(write_random_generator(tmp_path / "d.json", "dummy", seed=0, c_dim=3, resolution=16))
    z = np.random.RandomState(0).randn(5, g.z_dim)
    batch = g.sample(z, [0, 1, 2, 0, 1])
    one = np.concatenate([g.sample(z[i : i + 1], [c]) for i, c in enumerate([0, 1, 2, 0, 1])])
    assert batch.shape == (5, 16, 16, 3) and batch.dtype == np.uint8 and np.array_equal(batch, one)
    assert not np.array_equal(g.sample(z[:1], [0]), g.sample(z[:1], [1]))
    with pytest.raises(UsageError, match="class 3 is out of range"):
        g.sample(z[:1], [3])


def test_generate_runs_on_the_dummy_backend(tmp_path):
    from synthgen.generation import generate

    net = write_random_generator(tmp_path / "d.json", "dummy", seed=1, c_dim=2, resolution=8)
    a = generate(network=str(net), out=str(tmp_path / "a"), per_class=3, batch_size=1, device="cpu", progress=False)
    b = generate(network=str(net), out=str(tmp_path / "b"), per_class=3, batch_size=5, device="cpu", progress=False)
    assert a["written"] == b["written"] == 6
    for p in sorted((tmp_path / "a").glob("*/*.png")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["generator"]["backend"] == "dummy"


def test_bad_dummy_spec_is_one_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"format": "synthgen.dummy-generator", "version": 1, "z_dim": "8", "c_dim": 1,
                             "resolution": 16, "seed": 0}))
    with pytest.raises(DataError, match="integer z_dim"):
        load_generator(p)


def test_to_uint8_is_nvidias_conversion():
    import torch

    x = torch.tensor([-1.0, -0.001, 0.0, 0.999, 1.0]).reshape(1, 1, 1, 5).repeat(1, 3, 1, 1)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 127, 128, 255, 255]
