"""mmmos.training: manifests, the embedding cache, the four losses, the trainer, the config grid,
challenge metrics and ensemble selection (``mmmos-train``, ``mmmos-eval``).

Needs torch (the ``export`` extra). The members folder it writes is described in members_format.md.
"""
