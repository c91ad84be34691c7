"""
Makes C{twistd lhttp} available. Imports nothing of lhttp until it runs.
"""

from twisted.application.service import ServiceMaker

lhttp = ServiceMaker(
    "lhttp",
    "lhttp.tap",
    "An LHTTP server: pub/sub, processors and HTTP publish over WebSocket.",
    "lhttp",
)
