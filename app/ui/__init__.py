"""The Streamlit screens: router (main), session state, widgets, model cache, one view per page.

Only this package (and ``pages/``) imports Streamlit; the rest of ``app/`` is the core.
"""
