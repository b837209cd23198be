"""The floor of Python HTTP: a bare ASGI app, no framework, that reads the request and answers
the same small JSON object to every POST (405 to anything else), without looking at it.

    uvicorn app:app --workers 2 --no-access-log --loop uvloop --http httptools
    granian --interface asgi app:app --workers 2

Whatever a server does on top of its HTTP server (routing, parsing, checking, predicting,
answering) costs time above what this one measures. Its answers say nothing of a model, so
the benchmark does not check their labels, only that they are 2xx.
"""

BODY = b'{"prediction":"benign","probabilities":{"benign":1.0,"malignant":0.0}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
NOT_ALLOWED = [(b"content-length", b"0"), (b"allow", b"POST")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole body, as any server that answers it must read it
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    else:
        await send({"type": "http.response.start", "status": 405, "headers": NOT_ALLOWED})
        await send({"type": "http.response.body", "body": b""})
