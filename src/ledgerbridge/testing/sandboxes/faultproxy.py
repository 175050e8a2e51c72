"""``ledgerbridge sandbox faultproxy -o upstream=URL -o share=0.3``: see :mod:`ledgerbridge.testing.faultproxy`."""

from ledgerbridge.testing.faultproxy import DESCRIPTION, create_app

__all__ = ["DESCRIPTION", "create_app"]
