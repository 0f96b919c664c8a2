"""gridlearn.data: loaders for the public data sets the studies use.

Each loader returns a `DayAheadData`: features of the day before and the calendar, the
24 hourly loads of the target day, split chronologically. Data files are never committed;
see datasets/README.md for where each comes from.
"""

from gridlearn._lazy import lazy_exports

_EXPORTS = {
    "DayAheadData": "features",
    "day_ahead_features": "features",
    "chronological_split": "features",
    "load_pjm": "pjm",
    "pjm_data_dir": "pjm",
    "read_pjm_file": "pjm",
    "download_pjm": "pjm",
    "PJM_FILES": "pjm",
    "load_simbench": "simbench_load",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
