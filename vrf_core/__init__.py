"""vrf_core: Variance Reduction Fine-tuning (Zhu, Cui, Zhang, NeurIPS 2024) and its baselines.

Math modules (weights, calibration, ensembles, knn, selective, evaluate, metrics,
projection, zsf) are plain functions on arrays. Model and data modules (models,
zeroshot, finetune, extract, data, datasets) hold the torch and I/O code.
"""

__version__ = "0.1.0"
