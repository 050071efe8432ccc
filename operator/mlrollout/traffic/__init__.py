"""Traffic routers: one module per provider behind the `TrafficRouter` protocol in `base`."""
