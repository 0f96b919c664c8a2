"""Dashboard pages: every module here is discovered by `dashboards.registry`.

A page module exposes ``TITLE`` (str), ``STUDY`` (the study whose runs it shows, or
None for every study) and ``render(runs, results_dir)``; see dashboards/README.md.
Helpers that are not pages live one level up, in ``dashboards/``.

Why "views" and not "pages": Streamlit treats a ``pages/`` folder beside the entry
script as its legacy multipage directory and runs those files as scripts on a session's
first run, before ``st.navigation`` takes over.
"""
