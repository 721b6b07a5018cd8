# Parses dstack-ts answers with the upstream dstack client's own pydantic models, as the
# client does when it reads them (validate_extra_ignore: unknown fields ignored, every
# required field and every value's type checked). Reads a JSON list of {"model", "value"} on
# stdin, writes a JSON list of {"model", "ok", "errors"} on stdout. `model` is a type as the
# client's api/server/*.py names it ("Run", "List[Project]"). Run by test/upstream/models.test.ts.
import json
import sys
from typing import List  # noqa: F401 (used by the model expressions)

from dstack._internal.core.models.common import validate_extra_ignore
from dstack._internal.core.models.backends.base import BackendType  # noqa: F401
from dstack._internal.core.models.fleets import Fleet  # noqa: F401
from dstack._internal.core.models.instances import Instance  # noqa: F401
from dstack._internal.core.models.logs import JobSubmissionLogs  # noqa: F401
from dstack._internal.core.models.projects import Project  # noqa: F401
from dstack._internal.core.models.repos import RepoHead, RepoHeadWithCreds  # noqa: F401
from dstack._internal.core.models.runs import Run, RunPlan  # noqa: F401
from dstack._internal.core.models.users import User, UserWithCreds  # noqa: F401
from dstack._internal.server.schemas.runs import ApplyRunPlanRequest, GetRunPlanRequest  # noqa: F401
from pydantic import ValidationError


def check(model: str, value):
    tp = eval(model)  # the model names come from the test, not from the server
    try:
        validate_extra_ignore(tp, value)
        return {"model": model, "ok": True, "errors": []}
    except ValidationError as e:
        errors = [".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in e.errors()]
        return {"model": model, "ok": False, "errors": errors}


print(json.dumps([check(item["model"], item["value"]) for item in json.load(sys.stdin)]))
