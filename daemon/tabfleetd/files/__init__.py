"""Files on disk: the state dir's private modes (statedir), output dirs held by an O_NOFOLLOW fd (outdir)
and atomic image and manifest writes (outputs). May import only the package root (errors).
"""
