"""The incremental few-shot playground: a tiny hand-differentiated network learning boolean
functions and new digits from a few presentations, drawn as it learns (see docs/playground.md).

* :mod:`.network` — :class:`BatchedMLP`, B networks trained at once by hand backpropagation;
* :mod:`.boolean` — experiment 1 (:func:`learnability`) and 2 (:func:`threshold_fewshot`);
* :mod:`.digits` — experiment 3 (:func:`new_digit_experiment`);
* :mod:`.draw` — network drawings, histories, histograms, GIF;
* :mod:`.experiments` — the runners behind ``fewshot playground ...`` (tables + figures).
"""

from .boolean import (all_boolean_functions, fewshot_function_experiment, learnability, threshold_fewshot,
                      truth_table_inputs, zero_at_origin)
from .network import BatchedMLP, NetConfig, layer_lrs

__all__ = ["BatchedMLP", "NetConfig", "all_boolean_functions", "fewshot_function_experiment", "layer_lrs", "learnability",
           "threshold_fewshot", "truth_table_inputs", "zero_at_origin"]
