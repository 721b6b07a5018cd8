// Public exports of core/src/config. Append one export line per module.
export {}
