"""The benchmark's peer: what a user would write instead of convserve - FastAPI + uvicorn + PyTorch.

    /usr/bin/python3 bench/peer_fastapi.py MODEL_DIR [--port 8090] [--workers 1] [--threads 1]

Serves one model folder (rebuilt by tools/export_model.py's load_model, so it has the very weights
convserve serves) on the same KServe v2 JSON route, POST /v2/models/{name}/infer, plus
GET /v2/health/ready. The model is frozen and optimized for inference the way bench_torch.py
measures it. --workers uvicorn worker processes, each with --threads torch threads.

It is meant as a fair peer, not a straw man: the body is parsed with json.loads (no per-element
pydantic validation), the handler is async (inference runs on the event loop, one at a time per
worker), uvloop and httptools when installed, no access log. bench/run.sh measures two setups:
"tuned" (1 worker x 1 torch thread by default) and "plain" (1 worker, torch on every CPU). On a
quiet machine they are close; when any other program wants a CPU, the plain one's spinning
OpenMP threads make it collapse (tens of requests per second), the tuned one degrades gently.
"""

import argparse
import json
import os
import sys

import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
from export_model import load_model  # noqa: E402


def make_app(folder):
    with open(os.path.join(folder, "model.json")) as f:
        doc = json.load(f)
    name = doc["name"]
    sample = list(doc["input"]["shape"])
    out_name = doc["output"]["name"]
    with torch.no_grad():
        model = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.script(load_model(folder).eval())))
        for batch in (1, 1, 1, 2):  # warm up the profiling executor
            model(torch.zeros([batch] + sample))

    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready():
        return {"ready": True}

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: Request):
        if model_name != name:
            raise HTTPException(404, f"unknown model '{model_name}'")
        try:
            body = json.loads(await request.body())
            inp = body["inputs"][0]
            shape = [int(d) for d in inp["shape"]]
            x = torch.tensor(inp["data"], dtype=torch.float32).reshape(shape)
        except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as e:
            raise HTTPException(400, f"bad request: {e}")
        if shape[1:] != sample:
            raise HTTPException(400, f"input shape {shape} does not match [N]+{sample}")
        with torch.no_grad():
            y = model(x)
        out = {"model_name": name,
               "outputs": [{"name": out_name, "shape": list(y.shape), "datatype": "FP32",
                            "data": y.ravel().tolist()}]}
        if "id" in body:
            out["id"] = body["id"]
        return out

    return app


def app_from_env():
    """uvicorn's factory for worker processes: the model folder and thread count come from the
    environment, set by main()."""
    torch.set_num_threads(int(os.environ["PEER_THREADS"]))
    return make_app(os.environ["PEER_MODEL"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = p.parse_args()
    os.environ["PEER_MODEL"] = os.path.abspath(args.model)
    os.environ["PEER_THREADS"] = str(args.threads)
    sys.path.insert(0, HERE)
    uvicorn.run("peer_fastapi:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
