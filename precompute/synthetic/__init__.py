"""Seeded synthetic bundles: the arrays a real run would produce, from a generative model of
features instead of images (`world`), one split at a time at any size (`splits`). Two writers:
`toy` (small, through `precompute.assemble` with real kNN: `python -m precompute synthetic`
and the dashboard tests) and `large` (any shapes, kNN distances drawn: the benchmarks'
ImageNet-sized workload). The demo world (`precompute demo`) is the real, model-based default.
"""

from precompute.synthetic.toy import SyntheticSpec, write_synthetic_bundle

__all__ = ["SyntheticSpec", "write_synthetic_bundle"]
