"""control room of vpp-gateway."""
