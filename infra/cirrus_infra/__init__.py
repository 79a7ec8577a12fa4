"""CDK constructs of Cirrus PACS: one module per component, wired together in ``stack``."""

from cirrus_infra.stack import CirrusStack, build_app
from cirrus_infra.storage import Storage

__all__ = ["CirrusStack", "Storage", "build_app"]
