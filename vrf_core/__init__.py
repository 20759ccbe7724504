"""vrf_core: Variance Reduction Fine-tuning (Zhu, Cui, Zhang, NeurIPS 2024) and its baselines.

Math modules (weights, calibration, ensembles, knn, routing, evaluate, tuning, topm,
derive, metrics, projection, zsf) are plain functions on arrays. Model and data modules
(models, zeroshot, finetune, extract, data, datasets) hold the torch and I/O code; storage
(filesafe, bundle, bundle_schema) knows no math, and bundle_adapter joins the two.
"""

__version__ = "0.1.0"
