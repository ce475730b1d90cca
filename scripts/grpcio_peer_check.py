"""An outside gRPC client (Python grpcio, stubs generated from proto/ at run time) against a running
tokbench-coordinator with separate client and worker tokens: the trust boundaries as a peer sees them.

    python3 scripts/grpcio_peer_check.py ADDR PROTO_DIR REPORT_JSON CLIENT_TOKEN WORKER_TOKEN

REPORT_JSON: a real tokbench BenchReport (any tiny-opt job). Exits 0 and prints
"GRPCIO PEER CHECK OK" when every check holds; any failed check raises (exit 1).
Driven by coordinator/tests/grpcio_peer.rs.
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

addr, proto_dir, report_path, client_token, worker_token = sys.argv[1:6]
out = tempfile.mkdtemp(prefix="tokbench-grpcio-")
rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", "tokbench/v1/tokbench.proto"])
assert rc == 0, f"protoc failed ({rc})"
sys.path.insert(0, out)
from tokbench.v1 import tokbench_pb2 as pb  # noqa: E402
from tokbench.v1 import tokbench_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(addr)
bench = rpc.BenchmarksStub(channel)
queue = rpc.WorkerQueueStub(channel)
auth = lambda t: [("authorization", f"Bearer {t}")]  # noqa: E731
client, worker = auth(client_token), auth(worker_token)


def refused(code, call, *args, what):
    try:
        call(*args)
    except grpc.RpcError as e:
        assert e.code() == code, f"{what}: expected {code}, got {e.code()}: {e.details()}"
        assert e.details(), f"{what}: no message"
        return e.details()
    raise AssertionError(f"{what}: accepted")


spec = pb.SweepSpec(models=["tiny-opt"], batch_sizes=[1], workload_json=json.dumps({"max_tokens": 2, "warmup": 0, "repetitions": 1}))
sub = bench.SubmitSweep(pb.SubmitSweepRequest(spec=spec), metadata=client)
assert sub.sweep_id, sub

# Roles: a worker token cannot submit, a client token cannot act as a worker.
refused(grpc.StatusCode.PERMISSION_DENIED, lambda: bench.SubmitSweep(pb.SubmitSweepRequest(spec=spec), metadata=worker), what="worker token submitting")
caps = pb.WorkerCapabilities(hostname="py", backend="cpu", gpu_name="none (cpu)", tokbench_version="peer")
refused(grpc.StatusCode.PERMISSION_DENIED, lambda: queue.Register(pb.RegisterRequest(worker_id="py-forger", capabilities=caps), metadata=client), what="client token registering")
refused(grpc.StatusCode.UNAUTHENTICATED, lambda: bench.ListSweeps(pb.ListSweepsRequest(), metadata=auth("guess")), what="unknown token")

# Results only from the worker that ran the attempt.
for w in ("py-w1", "py-w2"):
    queue.Register(pb.RegisterRequest(worker_id=w, capabilities=caps), metadata=worker)
job = queue.LeaseJob(pb.LeaseJobRequest(worker_id="py-w1", wait_ms=2000), metadata=worker).job
assert job.job_id, "nothing leased"
report = json.load(open(report_path))
report["workload"] = json.loads(job.workload_json)
report_json = json.dumps(report)
for forger in ("py-w2", "never-registered"):
    msg = refused(grpc.StatusCode.PERMISSION_DENIED, lambda: queue.CompleteJob(pb.CompleteJobRequest(worker_id=forger, job_id=job.job_id, attempt=job.attempt, report_json=report_json), metadata=worker), what=f"{forger} completing")
    assert "py-w1" in msg, msg
    refused(grpc.StatusCode.PERMISSION_DENIED, lambda: queue.FailJob(pb.FailJobRequest(worker_id=forger, job_id=job.job_id, attempt=job.attempt, error="x"), metadata=worker), what=f"{forger} failing")
    refused(grpc.StatusCode.PERMISSION_DENIED, lambda: queue.Heartbeat(pb.HeartbeatRequest(worker_id=forger, job_id=job.job_id, attempt=job.attempt), metadata=worker), what=f"{forger} heartbeating")
# A report of another workload.
other = dict(report, workload=dict(report["workload"], max_tokens=3))
msg = refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: queue.CompleteJob(pb.CompleteJobRequest(worker_id="py-w1", job_id=job.job_id, attempt=job.attempt, report_json=json.dumps(other)), metadata=worker), what="wrong workload")
assert "max_tokens" in msg, msg
done = queue.CompleteJob(pb.CompleteJobRequest(worker_id="py-w1", job_id=job.job_id, attempt=job.attempt, report_json=report_json), metadata=worker)
assert done.run_id and not done.duplicate, done

# What a client may make a worker read, and control characters.
for model in ("../../../../etc/passwd", "/etc/passwd"):
    bad = pb.SweepSpec(models=[model], batch_sizes=[1], workload_json=spec.workload_json)
    msg = refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: bench.SubmitSweep(pb.SubmitSweepRequest(spec=bad), metadata=client), what=f"model {model}")
    assert "local:" in msg, msg
bad = pb.SweepSpec(models=["tiny-opt"], batch_sizes=[1], label="a\x00b", workload_json=spec.workload_json)
refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: bench.SubmitSweep(pb.SubmitSweepRequest(spec=bad), metadata=client), what="NUL in label")
print("GRPCIO PEER CHECK OK")
