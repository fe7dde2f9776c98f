"""The names of the files in a run folder, shared by the code that writes and reads them."""

CONFIG_FILE = "config.yaml"  # the run's resolved config
CHECKPOINT_FILE = "checkpoint.pt"  # the latest checkpoint
EVALS_FILE = "evals.jsonl"  # one line per evaluation
RESULTS_FILE = "results.json"  # the final per-task table
LOCK_FILE = ".lock"  # held by the one train process writing the folder (run_lock.py)
TENSORBOARD_DIR = "tb"  # the TensorBoard event files
