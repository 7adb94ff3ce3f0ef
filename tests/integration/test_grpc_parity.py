"""A client generated from protos/ alone gets the numbers REST gives (float32 server).

The client runs in its own process: its generated modules register ``lmscore.v1`` in
protobuf's descriptor pool, as the server's own generated code does in this process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from corpus import CHATS, ENGLISH, GIBBERISH, OTHER
from server_process import RunningServer
from tolerances import BATCH_INVARIANCE_REL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ENGLISH + OTHER + GIBBERISH

CLIENT = """
import json, os, sys
from importlib import resources
import grpc
from google.protobuf import json_format
from grpc_tools import protoc

out, proto_root, address, payload = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
os.makedirs(out, exist_ok=True)
# As `python -m grpc_tools.protoc` (and protoc's own include directory) do: the well-known
# types (google/protobuf/struct.proto) come with the compiler.
well_known = str(resources.files("grpc_tools") / "_proto")
assert protoc.main(["protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}",
                    f"--grpc_python_out={out}", "lmscore/v1/scoring.proto"]) == 0
sys.path.insert(0, out)
from lmscore.v1 import scoring_pb2 as pb, scoring_pb2_grpc as rpc

stub = rpc.ScorerStub(grpc.insecure_channel(address))
text = stub.ScoreText(pb.ScoreTextRequest(texts=payload["texts"], return_tokens=True, top_k=3))
chat = stub.ScoreChat(pb.ScoreChatRequest(conversations=[
    pb.Conversation(messages=[pb.ChatMessage(**m) for m in conv]) for conv in payload["chats"]]))
stream = list(stub.ScoreTextStream(iter(pb.ScoreTextRequest(texts=[t]) for t in payload["texts"])))
codes = {}
for name, request in {"empty": pb.ScoreTextRequest(), "unknown_model": pb.ScoreTextRequest(model="nope", texts=["a"])}.items():
    try:
        stub.ScoreText(request)
    except grpc.RpcError as error:
        codes[name] = error.code().name
try:
    stub.ScoreText(pb.ScoreTextRequest(texts=payload["texts"] * 8), timeout=0.001)
except grpc.RpcError as error:
    codes["deadline"] = error.code().name
dump = lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
print(json.dumps({"text": dump(text), "chat": dump(chat), "stream": [dump(s) for s in stream], "codes": codes}))
"""


def run_generated_client(server: RunningServer, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    payload = json.dumps({"texts": TEXTS, "chats": CHATS})
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "gen"),
            str(ROOT / "protos"),
            server.grpc,
            payload,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_generated_client_matches_rest(
    server: RunningServer, http: httpx.Client, tmp_path: Path
) -> None:
    grpc_side = run_generated_client(server, tmp_path)
    rest_text = http.post(
        "/v1/score/text", json={"texts": TEXTS, "return_tokens": True, "top_k": 3}
    ).json()
    rest_chat = http.post("/v1/score/chat", json={"conversations": CHATS}).json()
    # Separate requests (and the stream batches with its neighbours): the contract's tolerance.
    rel = BATCH_INVARIANCE_REL
    for rest, grpc_result in zip(rest_text["results"], grpc_side["text"]["results"], strict=True):
        assert math.isclose(rest["sum_logprob"], grpc_result["sum_logprob"], rel_tol=rel)
        assert math.isclose(rest["bits_per_char"], grpc_result["bits_per_char"], rel_tol=rel)
        assert [t["id"] for t in rest["tokens"]] == [t["id"] for t in grpc_result["tokens"]]
        assert "logprob" not in grpc_result["tokens"][0]
    for rest, grpc_result in zip(rest_chat["results"], grpc_side["chat"]["results"], strict=True):
        assert math.isclose(rest["sum_logprob"], grpc_result["sum_logprob"], rel_tol=rel)
        assert rest["num_scored_tokens"] == grpc_result["num_scored_tokens"]
    streamed = [s["results"][0]["sum_logprob"] for s in grpc_side["stream"]]
    assert len(streamed) == len(TEXTS)
    for rest, value in zip(rest_text["results"], streamed, strict=True):
        assert math.isclose(rest["sum_logprob"], value, rel_tol=rel)
    assert grpc_side["codes"] == {
        "empty": "INVALID_ARGUMENT",
        "unknown_model": "NOT_FOUND",
        "deadline": "DEADLINE_EXCEEDED",
    }
    assert http.get("/readyz").status_code == 200
