"""gridlearn.data: loaders for the public data sets the studies use.

Each loader returns a `DayAheadData`: features of the day before and the calendar, the
24 hourly loads of the target day, split chronologically. Data files are never committed;
see datasets/README.md for where each comes from.
"""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "features": "DayAheadData day_ahead_features chronological_split",
    "pjm": "load_pjm pjm_data_dir read_pjm_file download_pjm PJM_FILES",
    "simbench_load": "load_simbench",
    "synthetic": "synthetic_days",
})
