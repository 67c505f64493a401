"""Generate the Python code of open_inference.proto, which is committed beside it.

    .venv/bin/python -m shared.protocol.generate            # rewrite shared/protocol/*_pb2*
    .venv/bin/python -m shared.protocol.generate --out DIR  # the same files elsewhere (the test)

Why committed and why two compilers: the servers run grpcio 1.67 (the newest Triton's gRPC
client accepts) with protobuf 6 (what both that client and onnx accept). No grpcio-tools release
fits both: the 1.67 one generates messages for protobuf 5 (protobuf 6 warns on import of
them), the ones built for protobuf 6 generate a service module that refuses a grpcio older than
themselves. So the messages come from grpcio-tools 1.76 (protobuf 6.31's protoc) and the
service module from grpcio-tools 1.67.1, each in a throwaway environment uv builds from the
package index (dev time only: images and `make setup` never run this).
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]
PROTO = "shared/protocol/open_inference.proto"
MESSAGES_TOOLS = "grpcio-tools==1.76.0"
SERVICE_TOOLS = "grpcio-tools==1.67.1"
GENERATED = ["open_inference_pb2.py", "open_inference_pb2_grpc.py"]


def protoc(tools: str, out: Path, *outputs: str) -> None:
    command = [find_uv_bin(), "run", "--quiet", "--no-project", "--with", tools]
    command += ["python", "-m", "grpc_tools.protoc", f"-I{ROOT}"]
    command += [f"--{kind}_out={out}" for kind in outputs] + [str(ROOT / PROTO)]
    subprocess.run(command, check=True, cwd=ROOT)


def generate(out_dir: Path) -> None:
    """Write the generated files into out_dir."""
    with tempfile.TemporaryDirectory() as scratch:
        protoc(MESSAGES_TOOLS, Path(scratch), "python")
        protoc(SERVICE_TOOLS, Path(scratch), "grpc_python")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            source = Path(scratch) / "shared" / "protocol" / name
            (out_dir / name).write_text(source.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "shared" / "protocol")
    generate(parser.parse_args().out)
    print(f"generated {', '.join(GENERATED)} into {parser.parse_args().out}", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
