"""The control plane: the Unix socket server and its accept loop (server, listener), every wire command
(commands, accountops), pushed snapshots (subscription), export pages and prompt files (export,
prompts) and DaemonView, the Protocol through which they see the daemon (daemonview). May import
every layer below it (root, files, demo, sites, settings, fleet, store, schedule), never web or
service.
"""
