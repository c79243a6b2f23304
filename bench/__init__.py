"""The benchmark suite: ``make bench`` (full) and ``make bench-smoke`` (tiny, for CI).

``bench.run`` drives everything; ``bench.loaddata`` makes the data, ``bench.controls`` holds
the F1 floor views, ``bench.loadgen`` wraps wrk and hey, ``bench.server`` runs gunicorn and
``bench.inprocess`` measures what the agent sees in-process (and control P).
"""
