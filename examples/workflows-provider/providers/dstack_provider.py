"""A small provider library in the shape of seed-003's `dstack.Provider` and `dstack.Job`.

The server hands a provider program its workflow as JSON in DSTACK_WORKFLOW_DATA
(`{"name", "provider", "data", "variables"}`) and reads the jobs from the last line of the
program's standard output: `{"jobs": [...]}`, each job with the seed's Job fields.
"""
import json
import os
from typing import Dict, List, Optional


class Workflow:
    def __init__(self, raw: Dict):
        self.name: str = raw["name"]
        self.data: Dict = raw["data"]
        self.variables: Dict[str, str] = raw.get("variables", {})


class Job:
    def __init__(self, commands: List[str], image: Optional[str] = None, ports: Optional[List[int]] = None,
                 working_dir: Optional[str] = None, artifacts: Optional[List[str]] = None,
                 resources: Optional[Dict] = None, depends_on: Optional[List["Job"]] = None,
                 master: Optional["Job"] = None):
        self.commands = commands
        self.image = image
        self.ports = ports
        self.working_dir = working_dir
        self.artifacts = artifacts
        self.resources = resources
        self.depends_on = depends_on or []
        self.master = master


class Provider:
    def __init__(self, schema: Optional[str] = None):
        # The server checked the parameters against `schema` (providers.yaml names it) already.
        self.schema = schema
        self.workflow = Workflow(json.loads(os.environ["DSTACK_WORKFLOW_DATA"]))

    def create_jobs(self) -> List[Job]:
        raise NotImplementedError()

    def start(self):
        jobs = self.create_jobs()
        out = []
        for job in jobs:
            fields = {
                "commands": job.commands,
                "image": job.image,
                "ports": job.ports,
                "working_dir": job.working_dir,
                "artifacts": job.artifacts,
                "resources": job.resources,
                "depends_on": [jobs.index(d) for d in job.depends_on] or None,
                "master": jobs.index(job.master) if job.master is not None else None,
            }
            out.append({k: v for k, v in fields.items() if v is not None})
        print(json.dumps({"jobs": out}), flush=True)
