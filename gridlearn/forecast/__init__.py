"""Task-based forecasting (Donti, Amos & Kolter 2017): forecasters trained for dispatch cost."""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "models": "GaussianNet HeteroscedasticNet",
    "scheduling": "SchedulingParams SQP StochasticScheduler sqp_schedule expected_cost realised_cost task_loss",
    "training": "TrainSettings train_rmse train_task train_weighted_rmse evaluate train_rmse_epochs train_task_epochs",
    # locuslab/e2e-model-learning power_sched's protocol, step by step
    "reference_protocol": ("ReferenceSettings whole_data_standardised random_holdout train_rmse_fixed "
                           "train_weighted_rmse_reference train_task_reference"),
    # the network-aware variant: bus-level loads scheduled by a multi-period DC-OPF
    "network_aware": "NetworkTaskParams NetworkScheduler BusLoadForecaster train_task_network evaluate_network",
    # ... or by an hourly AC-OPF (the torch interior point of `gridlearn.grid.acopf_ipm`)
    "ac_scheduler": "ACNetworkScheduler",
    "bus_loads": "bus_load_data",
})
