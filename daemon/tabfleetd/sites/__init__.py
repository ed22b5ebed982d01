"""Site adapters: how a worker turns one prompt into image bytes on one web UI. Owns the site profiles and
their pure checker (profiles, which the client loads too, so this __init__ stays empty), the operator's
allowed hosts (sitepolicy), the generic ProfileAdapter (profile, `adapter_for`), its page scripts
(pagejs, pagelib) and the built-in *.toml. May import the package root and files.
"""
