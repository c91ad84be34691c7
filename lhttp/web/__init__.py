"""
The HTTP side of a node: L{websocket} (the WebSocket protocol and its
factory), L{resource} (the node's Resource tree: upgrades, C{/publish},
C{/health}, C{/metrics}), L{site} (the Site that bounds the HTTP phase),
the policies it applies (L{origins}, L{hosts}, L{bearer}, L{sendbuffer})
and the chat-room demo (L{demo}, C{static/}).
"""
