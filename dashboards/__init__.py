"""The Streamlit dashboard over run directories (see dashboards/README.md).

It sits at the top of the import graph: it reads what `gridlearn.results` wrote and what
the study schemas (e.g. `gridlearn.forecast.schema`) name, and never recomputes a study.
"""
