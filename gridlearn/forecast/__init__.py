"""Task-based forecasting (Donti, Amos & Kolter 2017): forecasters trained for dispatch cost."""
