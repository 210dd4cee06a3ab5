"""Where things are kept: the content-addressed cache and its kinds, atomic writes, locks and
leases, uploads and their links, subsets, progress."""
