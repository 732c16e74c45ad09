"""Scaling laws of pretraining on the prior: run a grid of model sizes x task budgets, read the finished runs back
from MLflow, fit L(N, D) with bootstrap uncertainty and plan the compute-optimal size and budget (`jobs.scaling`)."""

from basisfm.scaling.grid import GridRun, grid_config, run_grid
from basisfm.scaling.law import (FORMS, CostModel, LossLaw, Plan, ScalingPoint, bootstrap_laws, compute_optimal, fit_cost,
                                 fit_law, held_out_check, leave_one_out_error, select_form)
from basisfm.scaling.records import SCALING_EXPERIMENT, scaling_points, tag_scaling_run

__all__ = ["FORMS", "SCALING_EXPERIMENT", "CostModel", "GridRun", "LossLaw", "Plan", "ScalingPoint", "bootstrap_laws",
           "compute_optimal", "fit_cost", "fit_law", "grid_config", "held_out_check", "leave_one_out_error", "run_grid",
           "scaling_points", "select_form", "tag_scaling_run"]
