"""Site adapters: how a worker turns one prompt into image bytes on one web UI.

Every site is driven by the generic ProfileAdapter (profile.py, `adapter_for`) from a site profile (a TOML
file; built-ins in this directory). The job carries its checked profile, so the worker needs nothing else.
"""
