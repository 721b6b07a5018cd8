// Public exports of core/src/ports. Append one export line per module.
export {}
