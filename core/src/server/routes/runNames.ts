// Random run names in the upstream style (`wise-otter-1`): readable, lowercase, valid as
// run names and host names.
const ADJECTIVES = [
  "able", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fair", "fast", "fine", "fresh",
  "gentle", "glad", "grand", "happy", "keen", "kind", "lively", "lucky", "mellow", "merry", "neat", "nimble",
  "proud", "quick", "quiet", "rapid", "ready", "sharp", "shiny", "smart", "snappy", "solid", "steady", "sunny",
  "swift", "tidy", "warm", "wise", "witty", "young", "zesty"
]
const NOUNS = [
  "ant", "badger", "bat", "bear", "beaver", "bee", "bison", "cat", "cobra", "crab", "crane", "deer", "dodo",
  "dog", "eagle", "falcon", "ferret", "finch", "fox", "frog", "gecko", "goat", "hawk", "heron", "horse", "ibis",
  "jaguar", "koala", "lark", "lemur", "lion", "lynx", "mole", "moose", "newt", "otter", "owl", "panda", "puma",
  "quail", "rabbit", "raven", "seal", "shark", "sloth", "squid", "swan", "tiger", "toad", "turtle", "walrus",
  "whale", "wolf", "yak", "zebra"
]

const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(Math.random() * items.length)]

/** A random name such as `quick-otter-7`. */
export const randomRunName = (): string => `${pick(ADJECTIVES)}-${pick(NOUNS)}-${1 + Math.floor(Math.random() * 9)}`
