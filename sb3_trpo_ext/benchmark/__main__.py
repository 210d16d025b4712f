"""``python -m sb3_trpo_ext.benchmark run|report ...`` (console script ``sb3-trpo-bench``)."""

from sb3_trpo_ext.benchmark.cli import main

main()
