import { readFileSync } from "node:fs"
import { Either, ParseResult } from "effect"
import * as Api from "../core/src/api/runs.ts"
import { decodeRequest } from "../core/src/server/RequestDecoding.ts"
const body = JSON.parse(readFileSync("/tmp/upx/body-get_plan.json", "utf8"))
const r = decodeRequest(Api.GetPlanRequest)(body)
if (Either.isLeft(r)) console.log(ParseResult.ArrayFormatter.formatErrorSync(r.left))
else console.log(JSON.stringify(r.right, null, 0).slice(0, 1500))
