"""The chapters' failure scenarios as :class:`hautils.experiment.Experiment` objects.

One module per chapter.  A chapter, its lab notebook and the scripts that tune or soak a
setup build their experiments here, so the steps of a trial (what is probed, what is broken,
what "recovered" means, how the lab is repaired) are written once.
"""
