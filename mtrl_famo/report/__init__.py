"""Tables and plots across runs and seeds: ``mtrl-famo report RUN_DIR... [--out DIR]``.

Reads the run folders written by ``mtrl-famo train`` (``config.yaml``,
``evals.jsonl`` and, once a run has finished, ``results.json``), groups the runs
(one group per setting: runs that differ in any config value but the seed, paths and
logging are never pooled) and reports, per group, the final evaluation:

- the mean success rate over tasks, averaged over seeds, with a 95% stratified
  percentile bootstrap confidence interval over seeds (runs are resampled with
  replacement independently for every task, as rliable's ``StratifiedBootstrap``
  does);
- the interquartile mean (IQM) of the seeds x tasks success scores, with the
  same bootstrap CI (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
  Precipice"; the statistic the Meta-World+ paper reports);
- the per-task success of each group.

A run without ``results.json`` (or whose evaluation log went on past it) is in
progress: it is reported at its latest evaluation and marked so. Runs of
different benchmarks are reported in separate sections and plot files.

Outputs in ``--out`` (default ``report/``): ``report.md``, ``summary.csv``,
``per_task.csv``, ``runs.csv`` and, per benchmark ``B``,
``learning_curves_B.png``, ``per_task_heatmap_B.png``, ``per_task_curves_B.png``.

One job per module, in the order a report is made:

- :mod:`~mtrl_famo.report.runs`: finding and reading run folders;
- :mod:`~mtrl_famo.report.groups`: grouping runs whose settings agree;
- :mod:`~mtrl_famo.report.stats`: statistics on score matrices (IQM, bootstrap intervals), usable from Python;
- :mod:`~mtrl_famo.report.summary`: the statistics of one group, and its learning curves;
- :mod:`~mtrl_famo.report.tables` and :mod:`~mtrl_famo.report.plots`: Markdown/CSV and PNG output;
- :mod:`~mtrl_famo.report.command`: ``mtrl-famo report``.
"""

from mtrl_famo.config import ConfigError


class ReportError(ConfigError):
    """Bad input to ``mtrl-famo report`` (no run found, unreadable run files); exit code 2."""
