/** Suggests the allowed key closest to a mistyped one, for "did you mean …?" hints. */

const normalize = (s: string) => s.toLowerCase().replace(/[_\-\s]/g, "")

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export const editDistance = (a: string, b: string): number => {
  const d: Array<Array<number>> = Array.from({ length: a.length + 1 }, (_, i) => [i])
  for (let j = 1; j <= b.length; j++) d[0][j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }
  return d[a.length][b.length]
}

/**
 * The candidate closest to `word`, if it is close enough to be a plausible typo: separators
 * and case are ignored, and up to about half of the word may differ.
 * @example didYouMean("workdir", ["working_dir", "image"]) // "working_dir"
 */
export const didYouMean = (word: string, candidates: ReadonlyArray<string>): string | undefined => {
  const w = normalize(word)
  const limit = Math.max(1, Math.floor(w.length / 2))
  let best: { candidate: string; distance: number } | undefined
  for (const candidate of candidates) {
    const distance = editDistance(w, normalize(candidate))
    if (distance <= limit && (best === undefined || distance < best.distance)) best = { candidate, distance }
  }
  return best?.candidate
}
