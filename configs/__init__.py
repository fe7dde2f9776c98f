"""The YAML config tree, shipped inside the package as ``mtrl_famo.configs``."""
