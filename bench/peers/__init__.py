"""Peers that are set up in code, not by a launcher: each module here configures one peer the
way its documentation says, then imports the benchmark app unchanged and serves it.

Used by ``bench/run.py`` (the ``target`` of a configuration), each in its own venv.
"""
