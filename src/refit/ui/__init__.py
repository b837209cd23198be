"""refit's dashboard: the page `refit serve` answers at `/ui` (its HTML, CSS and JS in
`static/`, every chart drawn by it as SVG), and what its JSON endpoints show (`views` of the
registry, `traffic` of the server's metrics); `refit.serve.dashboard` serves them."""
