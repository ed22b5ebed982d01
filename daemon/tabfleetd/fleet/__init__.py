"""Worker processes and their browsers: the fleet that spawns and watches them (fleet), the worker's own
loop (worker) with its inbox (inbox: aborts reach a running task), login window (loginwindow) and process
tree (proctree, reaper); Chromium and its DevTools pipe (browser, devtools, channel, display), its profile
kept bounded (profilekeeper, profiletrim); remote browsers (remote), the memory governor (memory) and accounts
with their sessions (accounts, roster, cookiefile, sessions). May import the root, files, sites and settings;
never the store or anything above.
"""
