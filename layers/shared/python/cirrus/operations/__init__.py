"""Recovery tools of an archive's operator: ``cirrus verify``, ``reindex`` and ``redrive``.

The object store is the source of truth and the index is derived from it, so these tools
compare the two (``verify``), rebuild the index through ingest (``reindex``), and send
notifications that failed every receive back to ingest once the cause is fixed (``redrive``).
Each works on a running local stack (``cirrus.local.endpoints``) or on the deployment that
the CIRRUS_* environment variables name (``target``).
"""
