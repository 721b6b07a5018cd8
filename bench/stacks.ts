import type { BenchContext } from "./context.ts"
import type { Row } from "./support/stats.ts"
export const run = async (_ctx: BenchContext): Promise<Array<Row>> => []
