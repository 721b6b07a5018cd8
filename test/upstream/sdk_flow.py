# The upstream dstack SDK (0.21.2) driving a dstack-ts server, as a user of upstream would:
# plan a task, apply it, follow it to its end, read its logs, stop it, delete it. Prints one
# JSON line per step ({"step", ...}); test/upstream/client.test.ts checks them.
# Usage: python sdk_flow.py SERVER_URL TOKEN PROJECT RUN_NAME
import json
import sys
import time

from dstack.api import Client, Resources, Task
from dstack._internal.core.errors import ResourceNotExistsError

url, token, project, run_name = sys.argv[1:5]


def step(step_name, **fields):
    print(json.dumps({"step": step_name, **fields}), flush=True)


client = Client.from_config(project_name=project, server_url=url, user_token=token)
# Small resources: the local backend offers the machine the test runs on.
task = Task(
    name=run_name,
    commands=["echo hello from upstream", "echo to stderr >&2"],
    resources=Resources(cpu="1..", memory="1GB..", disk="1GB.."),
)
plan = client.runs.get_run_plan(task)
step("plan", run_name=plan.run_spec.run_name, jobs=len(plan.job_plans), action=str(plan.action.value))
run = client.runs.apply_plan(plan, reserve_ports=False)
step("apply", name=run.name, status=run.status.value)
deadline = time.time() + 90
while not run.status.is_finished() and time.time() < deadline:
    time.sleep(0.5)
    run.refresh()
step("done", status=run.status.value)
logs = b"".join(run.logs(replica_num=0)).decode()
step("logs", text=logs)
listed = [r.name for r in client.runs.list(all=True)]
step("list", names=listed)
run.stop(abort=True)
step("stop")
client.client.runs.delete(project, [run_name])
try:
    client.client.runs.get(project, run_name)
    step("deleted", ok=False)
except ResourceNotExistsError as e:
    step("deleted", ok=True, error=type(e).__name__, msg=str(e))
