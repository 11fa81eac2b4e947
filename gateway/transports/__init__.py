"""transports room of vpp-gateway."""
