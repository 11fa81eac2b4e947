"""codecs room of vpp-gateway."""
