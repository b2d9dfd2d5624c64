"""
The bulk send: thousands of personalised messages from one task, concurrently, never twice.

A layer of its own, between the hook it sends through and the operator that drives it
(``docs/architecture.md``): :mod:`~vantax_provider.bulk.send` runs one try;
:mod:`~vantax_provider.bulk.engine` sends, :mod:`~vantax_provider.bulk.journal` remembers across
tries, :mod:`~vantax_provider.bulk.items` renders and keys each recipient,
:mod:`~vantax_provider.bulk.outcomes` and :mod:`~vantax_provider.bulk.report` record the result.
"""
