"""`coulisse studio`: explain's views live in the browser, from a small local web app.

    explore.py   a query (text, weights, long-text mode, method) -> what the page shows: both answers,
                 the windows or the truncation point, the report's inspection; no HTTP
    views.py     the page: a form, the exact-vs-int8 panel, the long-text panel, then report.py's section
    app.py       FastAPI routes (GET /, GET /api/explain, GET /health), the Host check, uvicorn
    command.py   the click side; light, as `coulisse --help` imports it

Everything is a GET with a query string: the page works without JavaScript, a view can be bookmarked, and a
headless browser drives it (`chromium --dump-dom 'http://127.0.0.1:8765/?text=...'`).
"""
