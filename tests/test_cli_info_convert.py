import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import MICRO, require_tiny
from synthgen.cli.main import cli
from synthgen.errors import DataError
from synthgen.generators import load_generator


@pytest.mark.parametrize("pkl", ["network-scrubbed-p3.pkl", "network-scrubbed-p4.pkl"])
def test_info_on_fixture_pickles(pkl):
    r = CliRunner().invoke(cli, ["info", str(MICRO / pkl)])
    assert r.exit_code == 0, r.output
    assert "16x16" in r.output and "classes        4" in r.output and "62,750" in r.output
    r = CliRunner().invoke(cli, ["info", str(MICRO / pkl), "--json"])
    d = json.loads(r.output)
    assert d["num_ws"] == 6 and d["fp16_blocks"] == [8, 16] and len(d["sha256"]) == 64


def test_info_tiny():
    tiny = require_tiny()
    d = json.loads(CliRunner().invoke(cli, ["info", str(tiny / "network-scrubbed-p3.pkl"), "--json"]).output)
    assert (d["c_dim"], d["resolution"], d["num_ws"], d["parameters"]) == (10, 32, 8, 2301779)
    assert d["buffers"] == 3392 and d["sha256"].startswith("e3106afe2feea931")


def test_convert_roundtrip_bit_identical(tmp_path, micro_pkl):
    out = tmp_path / "micro.pt"
    r = CliRunner().invoke(cli, ["convert", str(micro_pkl), str(out)])
    assert r.exit_code == 0, r.output
    a, b = load_generator(micro_pkl), load_generator(out)
    z = np.random.RandomState(1).randn(3, 64)
    np.testing.assert_array_equal(a.sample(z, [0, 1, 3], psi=0.7), b.sample(z, [0, 1, 3], psi=0.7))
    assert b.provenance["source_format"] == "stylegan2-ada-pkl"
    # Refuses to clobber without --overwrite (usage error, exit 2).
    r = CliRunner().invoke(cli, ["convert", str(micro_pkl), str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_checkpoint_loads_with_weights_only(tmp_path, micro_pkl):
    out = tmp_path / "m.pt"
    CliRunner().invoke(cli, ["convert", str(micro_pkl), str(out)])
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "synthgen.stylegan2ada" and "synthesis.b4.const" in payload["state_dict"]


def test_corrupt_checkpoint(tmp_path, micro_pkl):
    out = tmp_path / "m.pt"
    CliRunner().invoke(cli, ["convert", str(micro_pkl), str(out)])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(out.read_bytes()[:-3000])
    with pytest.raises(DataError, match="bad.pt"):
        load_generator(bad)


def test_cli_errors_exit_codes(tmp_path):
    bad = tmp_path / "x.pkl"
    bad.write_text("not a pickle")
    r = CliRunner().invoke(cli, ["info", str(bad)])
    assert r.exit_code == 1 and "x.pkl" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["--debug", "info", str(bad)])
    assert r.exit_code == 1 and isinstance(r.exception, DataError)


def test_python_api_functions_are_callable():
    import synthgen
    import synthgen.alignment  # noqa: F401  (importing the stage modules leaves the functions)
    import synthgen.generation  # noqa: F401

    assert callable(synthgen.generate) and callable(synthgen.align) and callable(synthgen.shard)
    assert synthgen.load_generator(MICRO / "network-scrubbed-p4.pkl").c_dim == 4
