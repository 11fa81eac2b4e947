"""market room of vpp-gateway."""
