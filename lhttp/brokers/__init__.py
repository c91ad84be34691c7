"""
Brokers carry publishes between nodes (L{lhttp.interfaces.IBroker}):
L{embedded} for one node on its own (the default), L{nats} for a cluster
over NATS.
"""
