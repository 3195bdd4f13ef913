"""HTTP routers: thin layers from requests to registry calls and back."""
