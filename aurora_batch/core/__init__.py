"""Core: what every stage shares, with no domain imports: storage URLs (:mod:`.fs`), the output lock,
partition keys and statuses (:mod:`.keys`), the sky classes, the station table and the Sun and Moon ephemeris.

May import: nothing else of aurora_batch.
"""
