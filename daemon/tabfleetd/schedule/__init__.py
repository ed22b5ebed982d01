"""Dispatch: the scheduler that hands tasks to idle workers (scheduler), failure policy (retries),
pacing and rate limits (limits, window, rate), learned deadlines (deadlines), outages and full
disks (outages), images held for room (held) and each job's manifest kept in step with the store
(manifest). May import the root, files, settings, fleet and store.
"""
