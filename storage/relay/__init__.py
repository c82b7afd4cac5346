"""The cross-node relay: one zone's traffic between the nodes of a cluster over Redis pub/sub."""
