"""Benchmark results people can trust and compare.

- ``stats``: median, min, max and the bootstrap 95% interval of each figure; noisy marking.
- ``run``: the ``cases`` (raw samples + statistics) and ``run`` facts every bench report embeds,
  next to its ``machine`` (``mltools.env.machine``).
- ``compare``: ``mltools bench compare``, reading our reports and pyperf's files.
- ``describe``: their text.
"""
