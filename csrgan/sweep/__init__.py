"""Sweeps: the stage DAG (CycleGAN once -> pre-training once -> SRGAN trials) on Ray Tune + Optuna.

The sweep layer knows nothing of GAN internals: it expands the search space into trial configs, makes
sure shared stage artefacts exist, runs each trial's trainer through a context that reports to Tune and
records Parquet rows, and turns Tune's outcome into statuses, a resume command and an ablation table.
"""
