// kafkajs interop check, run by e2e/interop/clients/run.sh:
//
//   node check.js BOOTSTRAP TOPIC RF        (kafkajs found through NODE_PATH or ./node_modules)
//
// Prints one PASS/FAIL line per check:
//   - admin.createTopics: TOPIC with 3 partitions, replication factor RF; fetchTopicMetadata
//     shows 3 partitions with a leader and RF replicas each
//   - an idempotent producer (acks -1, InitProducerId) sends 300 keyed messages in two waves
//     with set timestamps (wave 1 at BASE+i ms, wave 2 at MID+i ms, MID = BASE+60 s)
//   - admin.fetchTopicOffsets (ListOffsets latest and earliest): low 0, high summing to 300
//   - a consumer group (fromBeginning: ListOffsets earliest) reads every value exactly once,
//     with its key and timestamp, offsets 0..high-1 per partition; its commits (admin.fetchOffsets)
//     are at each partition's end
//   - admin.fetchTopicOffsetsByTimestamp (ListOffsets by timestamp): MID gives each
//     partition's first wave-2 offset (its high watermark when it has none), BASE gives 0
//   - after 10 more messages a second consumer in the same group reads exactly those 10
//   - a consumer in a new group without fromBeginning (ListOffsets latest) reads only the 5
//     messages produced after its first fetch
// Exit status: 0 only if every check passed.
'use strict'

const { Kafka, logLevel, Partitioners } = require('kafkajs')

const [bootstrap, topic, rfArg] = process.argv.slice(2)
if (!bootstrap || !topic || !/^[1-9][0-9]*$/.test(rfArg || '')) {
  console.error('usage: node check.js BOOTSTRAP TOPIC RF')
  process.exit(2)
}
const RF = Number(rfArg)
const PARTITIONS = 3
const WAVE = 150
const MORE = 10
const LATEST = 5

let failed = 0
const pass = msg => console.log(`PASS kafkajs: ${msg}`)
const fail = msg => {
  console.log(`FAIL kafkajs: ${msg}`)
  failed++
}

// kafkajs' own log lines (warnings and errors: retries, rebalances) go to stderr, which
// run.sh shows when a check fails.
const logCreator = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log
  console.error(`kafkajs ${label} [${namespace}] ${message} ${JSON.stringify(extra)}`)
}

const kafka = new Kafka({
  clientId: 'strand-interop-kafkajs',
  brokers: bootstrap.split(','),
  logLevel: logLevel.WARN,
  logCreator,
  connectionTimeout: 10000,
  requestTimeout: 30000,
  retry: { retries: 8 },
})

const key = i => `k-${i}`
const value = i => `kafkajs-${i}`
const base = Math.floor(Date.now() / 1000) * 1000 - 10 * 60 * 1000 // recent past
const mid = base + 60 * 1000
const stamp = i => (i < WAVE ? base + i : mid + (i - WAVE))
const indexOf = v => {
  const m = /^kafkajs-([0-9]+)$/.exec(v)
  return m ? Number(m[1]) : -1
}
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Waits until cond() holds or ms pass; true when it held.
async function until(cond, ms) {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) return false
    await sleep(50)
  }
  return true
}

// Values in [from, to) seen zero times and those seen more than once (or out of range).
function exactlyOnce(counts, from, to) {
  const missing = []
  const dup = []
  for (let i = from; i < to; i++) {
    const c = counts.get(i) || 0
    if (c === 0) missing.push(i)
    else if (c > 1) dup.push(`${i}(x${c})`)
  }
  for (const i of counts.keys()) if (i < from || i >= to) dup.push(`${i}(out of range)`)
  const short = xs => (xs.length > 12 ? `${xs.slice(0, 12).join(',')},... (${xs.length})` : xs.join(','))
  return { missing: short(missing), dup: short(dup), ok: missing.length === 0 && dup.length === 0 }
}

// Runs a consumer in `groupId` until `want` messages arrived and then `quietMs` more, so
// duplicates and re-reads show. Resolves with the messages; a crash or a timeout is an error.
async function consume({ groupId, fromBeginning, want, quietMs = 2000, timeoutMs = 90000, afterFirstFetch }) {
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 500, retry: { retries: 8 } })
  const got = []
  let crash = null
  let fetched = false
  // A crash kafkajs restarts the consumer after (restart: true, e.g. a retriable
  // GROUP_LOAD_IN_PROGRESS while a fresh cluster creates its offsets topic) is only logged;
  // one it gives up on fails the check.
  consumer.on(consumer.events.CRASH, e => {
    const { error, restart } = e.payload
    console.error(`kafkajs consumer ${groupId} crashed (restart: ${restart}): ${describe(error)}`)
    if (!restart) crash = error
  })
  consumer.on(consumer.events.FETCH, () => {
    fetched = true
  })
  try {
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        got.push({
          partition,
          offset: Number(message.offset),
          key: message.key && message.key.toString(),
          value: message.value && message.value.toString(),
          timestamp: Number(message.timestamp),
        })
      },
    })
    if (afterFirstFetch) {
      if (!(await until(() => fetched || crash, timeoutMs))) throw new Error('no fetch completed')
      if (crash) throw crash
      await afterFirstFetch()
    }
    if (!(await until(() => got.length >= want || crash, timeoutMs))) {
      throw new Error(`timed out after ${timeoutMs} ms with ${got.length} of ${want} messages`)
    }
    if (crash) throw crash
    await sleep(quietMs)
    if (crash) throw crash
    return got
  } finally {
    await consumer.disconnect() // commits what was consumed, leaves the group
  }
}

async function produce(producer, from, to) {
  const messages = []
  for (let i = from; i < to; i++) messages.push({ key: key(i), value: value(i), timestamp: String(stamp(i)) })
  const res = await producer.send({ topic, acks: -1, messages })
  const bad = res.filter(r => r.errorCode !== 0)
  if (bad.length) throw new Error(`send answered ${JSON.stringify(bad)}`)
  return res
}

function describe(e) {
  if (!e) return String(e)
  const parts = [`${e.name || 'Error'}: ${e.message}`]
  if (e.type) parts.push(`type ${e.type}`)
  if (e.code !== undefined) parts.push(`code ${e.code}`)
  if (e.originalError) parts.push(`cause ${describe(e.originalError)}`)
  return parts.join(', ')
}

async function main() {
  const admin = kafka.admin()
  await admin.connect()
  let producer
  try {
    // --- topic ---------------------------------------------------------------------------------
    try {
      const created = await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: RF }],
      })
      const md = await admin.fetchTopicMetadata({ topics: [topic] })
      const ps = md.topics[0].partitions
      const good = ps.length === PARTITIONS && ps.every(p => p.leader >= 0 && p.replicas.length === RF)
      if (created === true && good) {
        pass(`admin.createTopics ${topic} (${PARTITIONS} partitions, rf ${RF}); metadata shows leaders and ${RF} replicas each`)
      } else {
        fail(`admin.createTopics returned ${created}; metadata partitions ${JSON.stringify(ps)}`)
        return
      }
    } catch (e) {
      fail(`admin.createTopics ${topic}: ${describe(e)}`)
      return
    }

    // --- produce (idempotent) -----------------------------------------------------------------
    producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
    })
    try {
      await producer.connect()
      await produce(producer, 0, WAVE)
      await produce(producer, WAVE, 2 * WAVE)
      pass(`idempotent producer (acks -1) sent ${2 * WAVE} keyed messages in 2 waves with set timestamps`)
    } catch (e) {
      fail(`idempotent producer (acks -1): ${describe(e)}`)
      return
    }

    // --- ListOffsets latest/earliest -----------------------------------------------------------
    let high
    try {
      const offs = await admin.fetchTopicOffsets(topic)
      offs.sort((a, b) => a.partition - b.partition)
      high = offs.map(o => Number(o.high))
      const sum = high.reduce((a, b) => a + b, 0)
      if (offs.length === PARTITIONS && sum === 2 * WAVE && offs.every(o => o.low === '0' && o.offset === o.high)) {
        pass(`admin.fetchTopicOffsets (ListOffsets latest/earliest): low 0, high ${JSON.stringify(high)} sums to ${sum}`)
      } else {
        fail(`admin.fetchTopicOffsets: want ${PARTITIONS} partitions with low 0 and high summing to ${2 * WAVE}, got ${JSON.stringify(offs)}`)
        return
      }
    } catch (e) {
      fail(`admin.fetchTopicOffsets: ${describe(e)}`)
      return
    }

    // --- consumer group from the beginning ----------------------------------------------------
    const group = `${topic}-group`
    const wave1 = new Array(PARTITIONS).fill(0)
    try {
      const got = await consume({ groupId: group, fromBeginning: true, want: 2 * WAVE })
      const counts = new Map()
      const problems = []
      const byPartition = Array.from({ length: PARTITIONS }, () => [])
      for (const m of got) {
        const i = indexOf(m.value)
        counts.set(i, (counts.get(i) || 0) + 1)
        if (i < 0 || m.key !== key(i) || m.timestamp !== stamp(i)) {
          problems.push(`p${m.partition}@${m.offset} key=${m.key} value=${m.value} ts=${m.timestamp}`)
        }
        if (byPartition[m.partition]) byPartition[m.partition].push(m.offset)
        if (i >= 0 && i < WAVE && m.partition < PARTITIONS) wave1[m.partition]++
      }
      byPartition.forEach((offsets, p) => {
        const want = Array.from({ length: high[p] }, (_, n) => n).join(',')
        if ([...offsets].sort((a, b) => a - b).join(',') !== want) {
          problems.push(`partition ${p}: offsets ${offsets.length} seen, want 0..${high[p] - 1} once each`)
        }
      })
      const once = exactlyOnce(counts, 0, 2 * WAVE)
      if (once.ok && problems.length === 0) {
        pass(`consumer group ${group} (fromBeginning): all ${2 * WAVE} values exactly once, keys, timestamps and offsets 0..high-1 as produced`)
      } else {
        fail(`consumer group ${group}: missing [${once.missing}], more than once [${once.dup}], ${problems.slice(0, 5).join('; ')}`)
      }
    } catch (e) {
      fail(`consumer group ${group} (fromBeginning): ${describe(e)}`)
      return
    }
    try {
      const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
      const c = committed.partitions.sort((a, b) => a.partition - b.partition).map(p => Number(p.offset))
      if (JSON.stringify(c) === JSON.stringify(high)) {
        pass(`admin.fetchOffsets: group ${group} committed at each partition's end ${JSON.stringify(c)}`)
      } else {
        fail(`admin.fetchOffsets: group ${group} committed ${JSON.stringify(c)}, want ${JSON.stringify(high)}`)
      }
    } catch (e) {
      fail(`admin.fetchOffsets ${group}: ${describe(e)}`)
    }

    // --- ListOffsets by timestamp --------------------------------------------------------------
    try {
      const atMid = (await admin.fetchTopicOffsetsByTimestamp(topic, mid))
        .sort((a, b) => a.partition - b.partition)
        .map(o => Number(o.offset))
      const atBase = (await admin.fetchTopicOffsetsByTimestamp(topic, base - 1000))
        .sort((a, b) => a.partition - b.partition)
        .map(o => Number(o.offset))
      // A partition holding only wave 1 has no record at or after MID: kafkajs then gives its high watermark.
      if (JSON.stringify(atMid) === JSON.stringify(wave1) && atBase.every(o => o === 0)) {
        pass(`admin.fetchTopicOffsetsByTimestamp (ListOffsets by timestamp): MID gives ${JSON.stringify(atMid)} (each partition's first wave-2 offset), before BASE 0`)
      } else {
        fail(`admin.fetchTopicOffsetsByTimestamp: MID gave ${JSON.stringify(atMid)}, want ${JSON.stringify(wave1)}; BASE-1s gave ${JSON.stringify(atBase)}, want 0s`)
      }
    } catch (e) {
      fail(`admin.fetchTopicOffsetsByTimestamp: ${describe(e)}`)
    }

    // --- the group resumes at its commit --------------------------------------------------------
    try {
      await produce(producer, 2 * WAVE, 2 * WAVE + MORE)
      const got = await consume({ groupId: group, fromBeginning: true, want: MORE })
      const counts = new Map()
      for (const m of got) counts.set(indexOf(m.value), (counts.get(indexOf(m.value)) || 0) + 1)
      const once = exactlyOnce(counts, 2 * WAVE, 2 * WAVE + MORE)
      if (once.ok) {
        pass(`a second consumer in group ${group} resumed at the commit: exactly the ${MORE} new values, nothing re-read`)
      } else {
        fail(`second consumer in group ${group}: want exactly ${value(2 * WAVE)}..${value(2 * WAVE + MORE - 1)}, got ${JSON.stringify(got.map(m => m.value).slice(0, 20))} (${got.length})`)
      }
    } catch (e) {
      fail(`second consumer in group ${group}: ${describe(e)}`)
    }

    // --- a new group from the latest offset ---------------------------------------------------
    const latestGroup = `${topic}-latest`
    const from = 2 * WAVE + MORE
    try {
      const got = await consume({
        groupId: latestGroup,
        fromBeginning: false,
        want: LATEST,
        afterFirstFetch: () => produce(producer, from, from + LATEST),
      })
      const counts = new Map()
      for (const m of got) counts.set(indexOf(m.value), (counts.get(indexOf(m.value)) || 0) + 1)
      const once = exactlyOnce(counts, from, from + LATEST)
      if (once.ok) {
        pass(`a consumer in new group ${latestGroup} without fromBeginning (ListOffsets latest) read exactly the ${LATEST} messages produced after it started`)
      } else {
        fail(`consumer in new group ${latestGroup} (latest): want exactly ${value(from)}..${value(from + LATEST - 1)}, got ${JSON.stringify(got.map(m => m.value).slice(0, 20))} (${got.length})`)
      }
    } catch (e) {
      fail(`consumer in new group ${latestGroup} (latest): ${describe(e)}`)
    }
  } finally {
    if (producer) await producer.disconnect().catch(() => {})
    await admin.disconnect().catch(() => {})
  }
}

main()
  .catch(e => fail(`unexpected error: ${describe(e)}\n${e && e.stack}`))
  .finally(() => {
    process.exitCode = failed > 0 ? 1 : 0
  })
