"""mlrollout's traffic gateway: routes OIP requests by track, mirrors to a shadow, applies the FallbackPolicy.

`routes` (the route-table schema) is importable without the network stack; the operator uses it.
"""
