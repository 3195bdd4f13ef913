"""KServe's SDK against a running server, in its own process: ``python -m tests.support.kserve_clients
HTTP_URL GRPC_ADDRESS MODEL``. kserve's generated protobuf module and tritonclient.grpc's both
define ``inference.*`` in protobuf's default pool, so they cannot be imported in one process.

Prints one JSON object: readiness, the metadata each protocol showed (the SDK has no metadata
call: the REST route, and KServe's generated gRPC stub), and the outputs for a fixed input.
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import httpx
import numpy as np
from kserve import InferInput, InferRequest
from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub


def example() -> np.ndarray:
    return np.random.default_rng(2).standard_normal((2, 320)).astype("f4")


async def run(base: str, grpc_address: str, model: str) -> dict:
    x = example()
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    inp = InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    answer = await rest.infer(base, InferRequest(model, infer_inputs=[inp]), model_name=model)
    out = {
        "rest_ready": await rest.is_server_ready(base) and await rest.is_model_ready(base, model),
        # the SDK has no metadata call over REST: the plain v2 route
        "rest_inputs": httpx.get(f"{base}/v2/models/{model}").json()["inputs"],
        "rest_output": answer.outputs[0].as_numpy().tolist(),
    }
    await rest.close()
    client = InferenceGRPCClient(grpc_address)
    async with grpc.aio.insecure_channel(grpc_address) as channel:  # KServe's generated stub
        meta = await GRPCInferenceServiceStub(channel).ModelMetadata(pb.ModelMetadataRequest(name=model))
    ginp = InferInput("x", list(x.shape), "FP32")
    ginp.set_data_from_numpy(x, binary_data=True)
    response = await client.infer(InferRequest(model, infer_inputs=[ginp]))
    out.update({
        "grpc_ready": await client.is_server_ready() and await client.is_model_ready(model),
        "grpc_inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                        for t in meta.inputs],
        "grpc_output": response.outputs[0].as_numpy().tolist(),
    })
    await client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(*sys.argv[1:4]))))
