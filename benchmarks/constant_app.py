"""The baseline: a bare FastAPI endpoint returning a constant JSON, the framework's own ceiling."""

from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def constant() -> dict[str, str]:
    return {"label": "setosa"}
