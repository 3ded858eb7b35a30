import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
const port = 16999;
const srv = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', process.env.AOF ?? 'no'], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 300));
const redis = new Redis({ port });
const msgs = gunzipSync(readFileSync('test/fixtures/bench/burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz')).toString().split('\n').filter(Boolean);
const ctx = '{"@timestamp":"2026-11-27T06:44:46.000Z","event":{"ingested":"2026-11-27T17:26:29.964Z"},"host":{"name":"vm"},"network":{"direction":"egress"},"destination":{"geo":{"country_iso_code":"US","country_name":"United States"}}}';
const N = 100000, B = 250;
const FIELDS = `local function fields(blob) local pos = 1 return function() local e = string.find(blob, '\\31', pos, true) if not e then return nil end local v = string.sub(blob, pos, e - 1) pos = e + 1 return v end end`;
const script = (call) => `${FIELDS}
local nextField = fields(ARGV[1]) local refused = {} local n = 0
while true do local stream = nextField() if not stream then break end
  local id, message, value = nextField(), nextField(), nextField()
  local reply = redis.${call}('XADD', KEYS[tonumber(stream)], id, 'm', message, 'x', value)
  if type(reply) == 'table' and reply.err then refused[#refused+1] = n end
  n = n + 1 end
return refused`;
const argvScript = `local refused = {} local n = 0
for i = 1, #ARGV, 4 do local reply = redis.pcall('XADD', KEYS[tonumber(ARGV[i])], ARGV[i+1], 'm', ARGV[i+2], 'x', ARGV[i+3]) if type(reply) == 'table' and reply.err then refused[#refused+1] = n end n = n + 1 end
return refused`;
async function cpu() { const info = await redis.info('cpu'); const u = /used_cpu_user:([\d.]+)/.exec(info)[1]; const s = /used_cpu_sys:([\d.]+)/.exec(info)[1]; return Number(u) + Number(s); }
let ms = 1_700_000_000_000;
async function run(name, sendBatch) {
  await redis.del('s1'); const c0 = await cpu(); const t0 = Date.now();
  const inflight = [];
  for (let b = 0; b < N / B; b++) {
    const items = []; for (let i = 0; i < B; i++) { items.push([`${ms}-${i}`, msgs[(b * B + i) % msgs.length], ctx]); } ms++;
    inflight.push(sendBatch(items)); if (inflight.length >= 4) await inflight.shift();
  }
  await Promise.all(inflight);
  const c1 = await cpu();
  console.log(name.padEnd(12), ((c1 - c0) * 1e6 / N).toFixed(2), 'µs Redis CPU/record', ((Date.now() - t0) * 1000 / N).toFixed(2), 'µs wall/record');
}
const blobOf = (items) => Buffer.from(items.map(([id, m, x]) => `1\x1f${id}\x1f${m}\x1f${x}\x1f`).join(''));
redis.defineCommand('pc', { lua: script('pcall') }); redis.defineCommand('cc', { lua: script('call') }); redis.defineCommand('av', { lua: argvScript });
for (let round = 0; round < 2; round++) {
  await run('lua pcall', (items) => redis.pc(1, 's1', blobOf(items)));
  await run('lua call', (items) => redis.cc(1, 's1', blobOf(items)));
  await run('lua argv', (items) => redis.av(1, 's1', ...items.flatMap(([id, m, x]) => ['1', id, m, x])));
  await run('multi/exec', (items) => { const p = redis.multi(); for (const [id, m, x] of items) p.xadd('s1', id, 'm', m, 'x', x); return p.exec(); });
  await run('pipeline', (items) => { const p = redis.pipeline(); for (const [id, m, x] of items) p.xadd('s1', id, 'm', m, 'x', x); return p.exec(); });
}
redis.disconnect(); srv.kill();
