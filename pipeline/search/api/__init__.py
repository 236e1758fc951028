"""The HTTP side of `fashion-cir serve`, in FastAPI's terms: routers (probes.py, search.py, browse.py, page.py) over
the serving state that deps.py injects, typed answers (answers.py), one-sentence errors (errors.py) and a search body
read with its upload capped (search_body.py). pipeline/search/server.py assembles them into the app."""
