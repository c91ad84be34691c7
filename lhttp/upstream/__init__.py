"""
The C{upstream} header: HTTP requests to the operator's backends (SPEC
section 5). L{urls} parses targets and holds the allow-list, L{agent}
makes the requests, L{filter} runs them for each message.
"""

from lhttp.upstream.agent import HTTPUpstream, NoUpstream, UpstreamResponse, makeUpstream
from lhttp.upstream.filter import UpstreamFilter
from lhttp.upstream.urls import AllowList, UpstreamRequest, parseURL

__all__ = [
    "AllowList",
    "HTTPUpstream",
    "NoUpstream",
    "UpstreamFilter",
    "UpstreamRequest",
    "UpstreamResponse",
    "makeUpstream",
    "parseURL",
]
