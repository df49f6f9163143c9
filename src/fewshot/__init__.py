"""fewshot: few-shot and one-shot learning, every classic method, measured.

The layers, each importing only from the ones above it in this list::

    fewshot.data        labelled data in memory (Omniglot, Lake's runs, IDX, folders), augmentations
    fewshot.tasks       N-way K-shot Q-query episodes, samplers, saved task sets, pairs
    fewshot.nn          backbones, distances, memory modules, the functional inner loop
    fewshot.methods     one module per method family, all sharing FewShotMethod
    fewshot.engine      trainer, run directory, checkpoints, evaluation, plots
    fewshot.regression  sinusoid regression and domain-adaptive meta-learning toys
    fewshot.text        sentence-embedding few-shot classification
    fewshot.playground  a hand-built MLP learning boolean functions and new digits
    fewshot.cli         the ``fewshot`` command (thin: parse, call, print)
"""

__version__ = "0.1.0"
