"""Three synthetic runs of one world for the Compare runs tests (test_compare_page, test_compare_browser).

run-a is the dashboard tests' synthetic world; run-b has the same samples and zero-shot model and a
fine-tuned encoder that drifts less under shift (the generator draws the same numbers: only the
encoder's scales differ); run-c is run-a's world with shift_hard of another size and shift_render left out."""

from dataclasses import replace
from pathlib import Path

import pytest

from precompute.assemble import AssembleSettings
from precompute.synthetic import SyntheticSpec, toy, write_synthetic_bundle
from precompute.synthetic.world import Encoder

SETTINGS = AssembleSettings(k_max=50, wse_alphas=[round(i / 10, 2) for i in range(11)], umap=False)
OTHER_SHIFTS = SyntheticSpec(ood=(("shift_v2", 1000, 0.25, 0), ("shift_sketch", 1000, 0.8, 0),
                                  ("shift_hard", 500, 1.0, 12)))
STEADIER_FT = replace(toy.TOY, ft=Encoder(spread=2.4, spread_growth=4.0, drift=0.8, head_noise=0.1))


def write_compare_bundles(root: Path, with_other_shifts: bool = True) -> Path:
    write_synthetic_bundle(root / "run-a", settings=SETTINGS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(toy, "TOY", STEADIER_FT)
        write_synthetic_bundle(root / "run-b", settings=SETTINGS)
    if with_other_shifts:
        write_synthetic_bundle(root / "run-c", spec=OTHER_SHIFTS, settings=SETTINGS)
    return root
