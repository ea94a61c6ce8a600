"""Optuna layer over recon_core: study specs, the objective, storage, workers, export and reports."""
