"""HTTP: routes, forms and templates."""
