"""``scaling serve``: a live, read-only dashboard of a results store in the browser.

``store`` lists sweeps and their cheap versions and caches what is computed per version;
``panels`` computes each panel (progress, training curves, the laws through the same functions
as ``scaling fit`` and ``scaling bopt``, parallel coordinates, the trial table) and turns them into Plotly JSON with
:mod:`analysis.report.figures` (the figure code ``scaling report`` draws with too); ``page`` writes the HTML and serves the static files (plotly.js
from the installed ``plotly`` package); ``app`` is the HTTP server behind a token.

May import everything in analysis; never torch or ray.
"""

from analysis.serve.app import Dashboard, make_server, serve_in_thread  # noqa: F401
