// Encoding throughput of the reference encoder gpt-tokenizer (o200k_base) on the golden corpus, for comparison with
// hetmoe's tokenizer on the same file (build/bin/bench_tokenizer, or the TokenizerBench test). Two workloads:
//   strings   every corpus string encoded on its own (3,588 calls per pass);
//   document  the corpus strings joined by "\n" into one text, encoded in one call.
// Each workload: one warm-up pass, then passes until at least MIN_SECONDS have elapsed; MB/s = UTF-8 bytes / time
// (1 MB = 10^6 bytes), the best pass and the mean. Both workloads run twice: with the package's default merge cache
// (100,000 pieces, warm after the first pass, so repeated pieces skip BPE) and with the cache off (every piece goes
// through BPE). Usage: node bench.mjs [CORPUS.jsonl] [MIN_SECONDS]

import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { encode, setMergeCacheSize } from 'gpt-tokenizer/encoding/o200k_base'

const here = dirname(fileURLToPath(import.meta.url))
const corpusPath = process.argv[2] ?? join(here, '..', '..', 'tests', 'data', 'tokenizer-golden', 'o200k_base.jsonl')
const minSeconds = Number(process.argv[3] ?? 3)

const texts = readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l).text)
const document = texts.join('\n')
const options = { disallowedSpecial: new Set() }

function run(name, bytes, pass) {
  pass()
  const times = []
  const start = process.hrtime.bigint()
  let numTokens = 0
  while (Number(process.hrtime.bigint() - start) / 1e9 < minSeconds) {
    const t0 = process.hrtime.bigint()
    numTokens = pass()
    times.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  const best = Math.min(...times)
  const mean = times.reduce((a, b) => a + b, 0) / times.length
  console.log(`gpt-tokenizer ${name}: ${(bytes / 1e6).toFixed(3)} MB -> ${numTokens} tokens, ${times.length} passes, ` +
    `best ${(bytes / 1e6 / best).toFixed(2)} MB/s, mean ${(bytes / 1e6 / mean).toFixed(2)} MB/s`)
}

const stringBytes = texts.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0)
for (const [mode, cacheSize] of [['cache', 100000], ['no cache', 0]]) {
  setMergeCacheSize(cacheSize)
  run(`strings (${mode})`, stringBytes, () => {
    let n = 0
    for (const t of texts) n += encode(t, options).length
    return n
  })
  run(`document (${mode})`, Buffer.byteLength(document, 'utf8'), () => encode(document, options).length)
}
console.log(`node ${process.version}, gpt-tokenizer ${JSON.parse(readFileSync(join(here, 'node_modules', 'gpt-tokenizer',
  'package.json'), 'utf8')).version}`)
