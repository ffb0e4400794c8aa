"""``fada eval``: pair generated and reference videos, run the metrics of ``fada.metrics``, report and sweep.

* ``pairing``  -- videos paired by file name; unpaired generated videos still get the no-reference metrics
* ``metrics``  -- which metrics run (missing weights: skipped with the reason), ``Evaluator`` over a pairing
* ``stats``    -- streaming mean / covariance for the pooled-frame Fréchet metrics
* ``faces``    -- face crops and the mouth box for the sync metrics
* ``testset``  -- ``--model --testset``: generate every item with the pipeline, timed (NFE-D, wall time)
* ``sweep``    -- ``--sweep cfg_audio=1:8:0.5``: the grid and the per-metric line charts
* ``report``   -- terminal table, JSON and CSV
"""

from fada.evaluation.metrics import Evaluator, MetricPlan, parse_metrics, plan_metrics
from fada.evaluation.pairing import Pair, Pairing, list_videos, pair_folders, pair_paths
from fada.evaluation.stats import RunningGaussian, frechet_running
from fada.evaluation.sweep import parse_sweep, plot_sweep

__all__ = ["Evaluator", "MetricPlan", "parse_metrics", "plan_metrics", "Pair", "Pairing", "list_videos",
           "pair_folders", "pair_paths", "RunningGaussian", "frechet_running", "parse_sweep", "plot_sweep"]
