"""Regenerate the committed message classes: ``python proto/generate.py`` from the repo root.

Only the messages are generated (``spans/control/control_pb2.py``); the two RPCs are bound by hand
with grpc's generic API (``spans/control/rpc.py``), because grpc_tools' service stubs import the
module by its proto path (``tracemesh.control.v1``), which would collide with our ``tracemesh``
package, and pin grpcio to the generator's version.
"""

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO = "tracemesh/control/v1/control.proto"

with tempfile.TemporaryDirectory() as out:
    status = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--pyi_out={out}", str(ROOT / "proto" / PROTO)])
    if status:
        sys.exit(f"protoc failed ({status})")
    for suffix in (".py", ".pyi"):
        shutil.copy(Path(out) / PROTO.replace(".proto", f"_pb2{suffix}"), ROOT / "spans" / "control" / f"control_pb2{suffix}")
print("wrote spans/control/control_pb2.py and control_pb2.pyi")
