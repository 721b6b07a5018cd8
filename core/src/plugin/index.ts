// Public exports of core/src/plugin. Append one export line per module.
export {}
