"""Commands: each parses its options and calls one library function."""

from __future__ import annotations

import click

from .main import cli, echo_json

NETWORK = click.Path(dir_okay=False, path_type=str)


@cli.command()
@click.argument("network", type=NETWORK)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(network, as_json):
    """Describe a generator file (NVIDIA .pkl or synthgen checkpoint).

    \b
    Example:
      synthgen info sface-casia-128.pkl
      synthgen info sface-casia-128.pkl --json
    """
    from synthgen.info import network_info

    d = network_info(network)
    if as_json:
        echo_json(d)
        return
    click.echo(f"file           {network}")
    click.echo(f"sha256         {d['sha256']}")
    click.echo(f"backend        {d['backend']} ({d['source_format']})")
    click.echo(f"resolution     {d['resolution']}x{d['resolution']}, {d['img_channels']} channels")
    click.echo(f"classes        {d['c_dim'] if d['c_dim'] else 'unconditional (c_dim=0)'}")
    click.echo(f"z_dim / w_dim  {d['z_dim']} / {d['w_dim']}")
    click.echo(f"num_ws         {d['num_ws']}")
    click.echo(f"mapping layers {d['mapping_layers']}")
    chans = ", ".join(f"{r}:{c}" for r, c in d["channels"].items())
    click.echo(f"channels       {chans}")
    click.echo(f"fp16 blocks    {', '.join(map(str, d['fp16_blocks'])) or 'none'} (used on CUDA only)")
    click.echo(f"conv_clamp     {d['conv_clamp']}")
    click.echo(f"parameters     {d['parameters']:,} (+ {d['buffers']:,} buffer elements)")


@cli.command()
@click.argument("src", metavar="IN.pkl", type=NETWORK)
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=str))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert(src, dst, overwrite):
    """Convert a NVIDIA StyleGAN2-ADA .pkl into a synthgen checkpoint (weights + JSON config).

    The checkpoint loads with torch.load(weights_only=True): no code can run on load.

    \b
    Example:
      synthgen convert sface-casia-128.pkl sface-casia-128.pt
    """
    from synthgen.info import convert_network

    d = convert_network(src, dst, overwrite=overwrite)
    click.echo(f"wrote {dst} (sha256 {d['sha256'][:16]}..., from {src})")
