"""``python -m sb3_trpo_ext.zoo COMMAND [ZOO FLAGS ...]``."""

from sb3_trpo_ext.zoo.cli import main

main()
