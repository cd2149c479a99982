"""Names of the choices of the MoW step, in a module that imports nothing (a command line's
``--help`` lists them without importing torch). :mod:`mowtheory.mow` re-exports them."""

#: reductions of the per-example costs G over the k fresh examples (:func:`mowtheory.mow.mow_loss`)
REDUCTIONS = ("sum", "mean", "sqrt_mean")
#: what enters the window after a step: ``"post"`` re-encodes after the update (the paper),
#: ``"pre"`` keeps the latents of the loss (the authors' code)
REFRESH_POLICIES = ("post", "pre")
