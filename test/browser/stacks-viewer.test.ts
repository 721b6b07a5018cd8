// The stack viewer in headless Chromium (playwright-core): Vega-Lite and Plotly plots drawn,
// a dataframe as a paged table, a param widget switching the attachment shown, and a private
// stack's page refused without its owner's token (accepted once with ?token=, then by cookie).
import { existsSync } from "node:fs"
import { afterAll, beforeAll, expect, it } from "vitest"
import { tableFromArrays } from "apache-arrow"
import { codecs as dataframeCodecs } from "@dstack-ts/handler-dataframe"
import { codecs as plotCodecs } from "@dstack-ts/handler-plot"
import { Stacks } from "@dstack-ts/client"
import { barChart, plotlyFigure } from "../../plugins/handler-plot/test/fixtures.ts"
import { describeWith } from "../support/components.ts"
import { startStackServer, type StackServer } from "./stackServer.ts"

const CHROMIUM = "/usr/bin/chromium"
const hasChromium = existsSync(CHROMIUM)

describeWith("chromium", hasChromium, `${CHROMIUM} is missing (apt-get install -y chromium)`, () => {
  let s: StackServer
  let alice: string
  let browser: import("playwright-core").Browser

  beforeAll(async () => {
    s = await startStackServer()
    alice = await s.createUser("alice")
    const { chromium } = await import("playwright-core")
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    })
    const stacks = Stacks.make({ url: s.url, token: alice, codecs: [...dataframeCodecs, ...plotCodecs] })
    const frame = stacks.frame("viewer/mixed", { access: "public" })
    await frame.add(barChart, { params: { kind: "vega" }, description: "a Vega-Lite bar chart" })
    await frame.add(plotlyFigure, { params: { kind: "plotly" }, description: "a Plotly figure" })
    await frame.add(tableFromArrays({ n: Int32Array.from({ length: 45 }, (_, i) => i), sq: Float64Array.from({ length: 45 }, (_, i) => i * i) }), {
      params: { kind: "table" },
      description: "a table"
    })
    await frame.push("three kinds")
    const sliders = stacks.frame("viewer/numbers", { access: "public" })
    for (const n of [1, 2, 3]) await sliders.add({ ...barChart, title: `n=${n}` }, { params: { n, log: n === 2 } })
    await sliders.push("numbers")
    await stacks.push("viewer/secret", barChart, { access: "private", message: "hidden" })
  }, 120_000)
  afterAll(async () => {
    await browser?.close()
    await s?.close()
  })

  it("draws a Vega-Lite plot, a Plotly plot and a paged table, switched by a select widget", async () => {
    const page = await browser.newPage()
    try {
      await page.goto(`${s.url}/stacks/alice/viewer/mixed`)
      await page.waitForSelector('#attachment[data-rendered="true"][data-index="0"]')
      expect(await page.locator("#attachment svg.marks, #attachment canvas").count()).toBeGreaterThan(0)
      expect(await page.locator("#attachment svg .mark-rect path").count()).toBeGreaterThan(0)
      expect(await page.textContent("#history")).toContain("three kinds")

      const select = page.locator('select[data-param="kind"]')
      await select.selectOption({ label: "plotly" })
      await page.waitForSelector('#attachment[data-rendered="true"][data-index="1"]')
      expect(await page.locator("#attachment .js-plotly-plot svg.main-svg").count()).toBeGreaterThan(0)

      await select.selectOption({ label: "table" })
      await page.waitForSelector('#attachment[data-rendered="true"][data-index="2"]')
      expect(await page.locator("table.dataframe th").allTextContents()).toEqual(["n", "sq"])
      expect(await page.locator("table.dataframe tr").count()).toBe(21)
      expect(await page.textContent(".pager .rows")).toContain("1–20 of 45")
      await page.click('button[data-page="next"]')
      await page.waitForFunction(() => document.querySelector(".pager .rows")?.textContent?.includes("21–40"))
      expect(await page.locator("table.dataframe tr:nth-child(2) td").first().textContent()).toBe("20")
    } finally {
      await page.close()
    }
  })

  it("a slider and a checkbox switch between numeric and boolean params", async () => {
    const page = await browser.newPage()
    try {
      await page.goto(`${s.url}/stacks/alice/viewer/numbers`)
      await page.waitForSelector('#attachment[data-rendered="true"][data-index="0"]')
      expect(await page.locator('input[type="range"][data-param="n"]').count()).toBe(1)
      await page.locator('input[type="range"][data-param="n"]').fill("1")
      // n=2 with log=false matches nothing: the viewer says so instead of showing a wrong plot.
      await page.waitForSelector('#attachment[data-index=""]')
      await page.locator('input[type="checkbox"][data-param="log"]').check()
      await page.waitForSelector('#attachment[data-rendered="true"][data-index="1"]')
      expect(await page.textContent('output[data-param-value="n"]')).toBe("2")
    } finally {
      await page.close()
    }
  })

  it("refuses a private stack's page without the owner's token; ?token= once sets a cookie", async () => {
    const context = await browser.newContext()
    const page = await context.newPage()
    try {
      const denied = await page.goto(`${s.url}/stacks/alice/viewer/secret`)
      expect(denied?.status()).toBe(401)
      expect(await page.textContent("#error")).toContain("private")
      const bob = await s.createUser("bob")
      const other = await page.goto(`${s.url}/stacks/alice/viewer/secret?token=${bob}`)
      expect(other?.status()).toBe(403)
      const ok = await page.goto(`${s.url}/stacks/alice/viewer/secret?token=${alice}`)
      expect(ok?.status()).toBe(200)
      expect(page.url()).toBe(`${s.url}/stacks/alice/viewer/secret`)
      await page.waitForSelector('#attachment[data-rendered="true"]')
      // The cookie alone keeps working.
      expect((await page.goto(`${s.url}/stacks/alice/viewer/secret`))?.status()).toBe(200)
      expect((await page.goto(`${s.url}/stacks/alice/viewer/nothing-here`))?.status()).toBe(404)
    } finally {
      await context.close()
    }
  })
})
