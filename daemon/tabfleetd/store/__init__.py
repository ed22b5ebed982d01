"""The LMDB store and everything that writes it: the store and its thread (store, storethread), its file
checks, copies and compaction (storefile), stored events (eventstore, eventkeeper) and the live event
log (events), job writes in batches (bulk) and housekeeping (retention). May import the root, files
and settings.
"""
