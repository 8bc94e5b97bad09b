"""HTTP routes, one module per family; each route hands its work to a service on `app.state`."""
