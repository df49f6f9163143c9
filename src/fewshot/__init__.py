"""fewshot: few-shot and one-shot learning, every classic method, measured.

The layout follows the pipeline::

    fewshot.data       labelled data in memory (Omniglot, Lake's runs, IDX, folders, arrays)
    fewshot.episodes   N-way K-shot Q-query episodes, samplers, saved task sets
    fewshot.backbones  embedding networks (Conv4, MLP, ...)
    fewshot.methods    one module per method family, all sharing FewShotMethod
    fewshot.train      the episodic / mini-batch trainer with checkpoints and resume
    fewshot.evaluate   accuracy with 95% confidence intervals, Lake's protocol
    fewshot.plots      curves, episodes, embeddings
    fewshot.cli        the ``fewshot`` command
"""

__version__ = "0.1.0"
