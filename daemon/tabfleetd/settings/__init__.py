"""The daemon's configuration: the frozen Config (config) loaded once and passed down, the [[workers]]
bindings (workerspec) and remote browser endpoints (endpoint). May import the root, files and
sites (to check profile variables and allowed hosts).
"""
