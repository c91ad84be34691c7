"""
C{twistd lhttp}: the module the plugin names (L{twisted.plugins.lhttp_plugin}).
The options are L{lhttp.options}, the services L{lhttp.service}.
"""

from lhttp.options import Options
from lhttp.service import makeService

__all__ = ["Options", "makeService"]
