"""mtrl-famo: multi-task soft actor-critic on Meta-World with pluggable task-loss aggregators."""

__version__ = "0.1.0"
