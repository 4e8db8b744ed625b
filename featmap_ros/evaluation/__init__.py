"""Evaluation: metrics, records, datasets, published results, online scoring, ablation, plots, benchmarks."""
