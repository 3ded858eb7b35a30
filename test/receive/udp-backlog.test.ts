import t from 'tap';
import { readdirSync, truncateSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ChunkBacklog } from '../../src/receive/udp-backlog.js';
import { tempDir } from '../helpers/temp.js';

const chunk = (n: number, bytes = 100): Buffer => Buffer.alloc(bytes, n % 256);
const drain = (b: ChunkBacklog): number[] => {
  const out: number[] = [];
  for (let c = b.shift(); c !== undefined; c = b.shift()) out.push(c[0]!);
  return out;
};

t.test('memory first, then disk, read back in the order pushed', async (t) => {
  const dir = tempDir(t, 'backlog');
  const b = new ChunkBacklog({ memoryMaxBytes: 300, dir, diskMaxBytes: 1 << 20, segmentBytes: 500 });
  for (let i = 0; i < 20; i++) t.ok(b.push(chunk(i)));
  t.ok(readdirSync(dir).length > 1, 'several segments written');
  t.equal(b.bytes, 300 + 17 * 104);
  // Pushed while older chunks are on disk: they go behind them, not into memory.
  t.same(drain(b).slice(0, 5), [0, 1, 2, 3, 4]);
  b.push(chunk(20));
  t.same(drain(b), [20], 'then what came after');
  t.ok(b.empty);
  t.same(readdirSync(dir), [], 'segments deleted once read');
});

t.test('full memory and disk refuse the chunk', async (t) => {
  const b = new ChunkBacklog({ memoryMaxBytes: 250, dir: tempDir(t, 'backlog'), diskMaxBytes: 220 });
  t.ok(b.push(chunk(0)));
  t.ok(b.push(chunk(1)));
  t.ok(b.push(chunk(2)), 'to disk');
  t.ok(b.push(chunk(3)), 'to disk');
  t.notOk(b.push(chunk(4)), 'disk full');
  const memoryOnly = new ChunkBacklog({ memoryMaxBytes: 250, dir: undefined, diskMaxBytes: 0 });
  t.ok(memoryOnly.push(chunk(0)));
  t.ok(memoryOnly.push(chunk(1)));
  t.notOk(memoryOnly.push(chunk(2)), 'no disk: memory full refuses');
});

t.test('persist puts memory ahead of older segments; a new instance reads all back in order', async (t) => {
  const dir = tempDir(t, 'backlog');
  const b = new ChunkBacklog({ memoryMaxBytes: 300, dir, diskMaxBytes: 1 << 20 });
  for (let i = 0; i < 6; i++) b.push(chunk(i));
  t.same([b.shift()![0]], [0]);
  b.persist();
  const again = new ChunkBacklog({ memoryMaxBytes: 300, dir, diskMaxBytes: 1 << 20 });
  t.equal(again.onDisk, 5 * 104, 'found on disk');
  t.same(drain(again), [1, 2, 3, 4, 5]);
});

t.test('a segment torn by a crash mid-write yields its whole chunks', async (t) => {
  const dir = tempDir(t, 'backlog');
  const b = new ChunkBacklog({ memoryMaxBytes: 0, dir, diskMaxBytes: 1 << 20 });
  for (let i = 0; i < 3; i++) b.push(chunk(i));
  b.persist();
  const [segment] = readdirSync(dir);
  truncateSync(join(dir, segment!), statSync(join(dir, segment!)).size - 10);
  t.same(drain(new ChunkBacklog({ memoryMaxBytes: 0, dir, diskMaxBytes: 1 << 20 })), [0, 1]);
});

t.test('chunks written to disk are released for reuse; read back into memory the caller allocates', async (t) => {
  const released: number[] = [];
  const allocated: number[] = [];
  const b = new ChunkBacklog({
    memoryMaxBytes: 100,
    dir: tempDir(t, 'backlog'),
    diskMaxBytes: 1 << 20,
    release: (c) => released.push(c[0]!),
    allocate: (bytes) => {
      allocated.push(bytes);
      return Buffer.alloc(bytes + 50, 0xff);
    },
  });
  for (let i = 0; i < 4; i++) b.push(chunk(i));
  t.same(released, [1, 2, 3], 'the chunk kept in memory is not released; the ones on disk are');
  const back = [b.shift(), b.shift(), b.shift(), b.shift()];
  t.same(allocated, [100, 100, 100], 'one allocation per chunk read back, of its length');
  t.same(back.map((c) => [c![0], c!.length]), [[0, 100], [1, 100], [2, 100], [3, 100]], 'each a view of its own length, in order');
});
