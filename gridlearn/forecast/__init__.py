"""Task-based forecasting (Donti, Amos & Kolter 2017): forecasters trained for dispatch cost."""

from gridlearn._lazy import lazy_exports

_EXPORTS = {
    "GaussianNet": "models",
    "HeteroscedasticNet": "models",
    "SchedulingParams": "scheduling",
    "SQP": "scheduling",
    "StochasticScheduler": "scheduling",
    "sqp_schedule": "scheduling",
    "expected_cost": "scheduling",
    "realised_cost": "scheduling",
    "task_loss": "scheduling",
    "TrainSettings": "training",
    "train_rmse": "training",
    "train_task": "training",
    "train_weighted_rmse": "training",
    "evaluate": "training",
    "train_rmse_epochs": "training",
    "train_task_epochs": "training",
    # locuslab/e2e-model-learning power_sched's protocol, step by step
    "ReferenceSettings": "reference_protocol",
    "whole_data_standardised": "reference_protocol",
    "random_holdout": "reference_protocol",
    "train_rmse_fixed": "reference_protocol",
    "train_weighted_rmse_reference": "reference_protocol",
    "train_task_reference": "reference_protocol",
    # the network-aware variant: bus-level loads scheduled by a multi-period DC-OPF
    "NetworkTaskParams": "network_aware",
    "NetworkScheduler": "network_aware",
    "BusLoadForecaster": "network_aware",
    "train_task_network": "network_aware",
    "evaluate_network": "network_aware",
    "bus_load_data": "bus_loads",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
