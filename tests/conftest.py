import os
import sys
from pathlib import Path

import pytest

# A failed hub lookup retries for ~50 s; nothing here may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


@pytest.fixture(scope="session")
def synthetic_bundles(tmp_path_factory):
    """A folder holding one seeded synthetic bundle (`synth`, with its embedding map), built once per
    session for the dashboard tests."""
    from precompute.assemble import AssembleSettings
    from precompute.synthetic import write_synthetic_bundle

    root = tmp_path_factory.mktemp("bundles")
    write_synthetic_bundle(root / "synth", settings=AssembleSettings(
        k_max=50, wse_alphas=[round(i / 10, 2) for i in range(11)], umap_max_points=2000))
    return root
