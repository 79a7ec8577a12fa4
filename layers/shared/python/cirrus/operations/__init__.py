"""Recovery tools of an archive's operator: ``cirrus verify``, ``reindex`` and ``redrive``.

The object store is the source of truth and the index is derived from it. ``verify``
compares the two, ``reindex`` rebuilds the index through ingest, and ``redrive`` sends
notifications that failed every receive back to ingest once the cause is fixed.
Each works on a running local stack (``cirrus.local.endpoints``) or on the deployment that
the CIRRUS_* environment variables name (``target``).
"""
