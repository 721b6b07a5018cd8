/**
 * The stack viewer's part for dataframes: a table paged 20 rows at a time, read from the
 * server's `/api/stacks/table` (which decodes the attachment with the installed codecs).
 */
import type { StackViewer } from "@dstack-ts/core"

export const tableViewer: StackViewer = {
  applications: ["dataframe"],
  script: String.raw`dstackViewer.register("table", function (ctx) {
  var PAGE = 20;
  function draw(offset) {
    return ctx.fetch("/api/stacks/table?" + ctx.query({ offset: offset, limit: PAGE })).then(function (r) { return r.json(); }).then(function (page) {
      var out = ctx.container;
      out.textContent = "";
      var table = ctx.el("table", { class: "dataframe" });
      var head = ctx.el("tr");
      page.columns.forEach(function (c) { head.appendChild(ctx.el("th", {}, c)); });
      table.appendChild(head);
      page.rows.forEach(function (row) {
        var tr = ctx.el("tr");
        row.forEach(function (v) { tr.appendChild(ctx.el("td", {}, v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v))); });
        table.appendChild(tr);
      });
      out.appendChild(table);
      var nav = ctx.el("p", { class: "pager" });
      var end = Math.min(page.offset + page.rows.length, page.total);
      nav.appendChild(ctx.el("span", { class: "rows" }, "rows " + (page.total === 0 ? 0 : page.offset + 1) + "–" + end + " of " + page.total + " "));
      var prev = ctx.el("button", { type: "button", "data-page": "prev" }, "Previous");
      prev.disabled = page.offset === 0;
      prev.onclick = function () { draw(Math.max(0, page.offset - PAGE)); };
      var next = ctx.el("button", { type: "button", "data-page": "next" }, "Next");
      next.disabled = end >= page.total;
      next.onclick = function () { draw(page.offset + PAGE); };
      nav.appendChild(prev);
      nav.appendChild(next);
      out.appendChild(nav);
    });
  }
  return draw(0);
});
`
}

/** The dataframe viewers by name, as contributed by the plugin. */
export const viewers: Readonly<Record<string, StackViewer>> = { table: tableViewer }
