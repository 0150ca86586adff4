"""pg-eventstore's benchmark suite: each operation measured three ways, interleaved,
on one server in one run (this library, raw psycopg 3 as the floor, and
eventsourcing's ``PostgresAggregateRecorder`` as the peer), with what the global
feed costs an append and how fast the feed reads.

Run it with ``python -m benchmarks`` (``--help`` lists the options). The ratios
to the floor, measured in the same run, are the claim; absolute figures depend
on the machine.
"""
