"""One module per sandboxed SaaS system (see :mod:`ledgerbridge.testing.sandbox`): ``create_app(**options)`` and
``DESCRIPTION``. ``ledgerbridge sandbox list`` shows them."""
