# seed-003's curl provider: one job that downloads `url` to `output`.
from typing import List

from dstack_provider import Job, Provider


class CurlProvider(Provider):
    def __init__(self):
        super().__init__(schema="providers/curl/schema.yaml")
        self.url = self.workflow.data["url"]
        self.output = self.workflow.data["output"]
        self.artifacts = self.workflow.data.get("artifacts")
        self.resources = self.workflow.data.get("resources")

    def create_jobs(self) -> List[Job]:
        print(f"curl provider: {self.url} -> {self.output}")
        return [Job(
            commands=[
                f"mkdir -p \"$(dirname '{self.output}')\"",
                f"curl -fsSL '{self.url}' -o '{self.output}'"
            ],
            artifacts=self.artifacts,
            resources=self.resources
        )]


if __name__ == '__main__':
    provider = CurlProvider()
    provider.start()
