import t from 'tap';
import { readdirSync, truncateSync, statSync, writevSync } from 'node:fs';
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
  for (let i = 0; i < 20; i++) t.equal(b.push(chunk(i)), 'kept');
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
  t.equal(b.push(chunk(0)), 'kept');
  t.equal(b.push(chunk(1)), 'kept');
  t.equal(b.push(chunk(2)), 'kept', 'to disk');
  t.equal(b.push(chunk(3)), 'kept', 'to disk');
  t.equal(b.push(chunk(4)), 'full', 'disk full');
  const memoryOnly = new ChunkBacklog({ memoryMaxBytes: 250, dir: undefined, diskMaxBytes: 0 });
  t.equal(memoryOnly.push(chunk(0)), 'kept');
  t.equal(memoryOnly.push(chunk(1)), 'kept');
  t.equal(memoryOnly.push(chunk(2)), 'full', 'no disk: memory full refuses');
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
  const torn: number[] = [];
  t.same(drain(new ChunkBacklog({ memoryMaxBytes: 0, dir, diskMaxBytes: 1 << 20, onTorn: (bytes) => torn.push(bytes) })), [0, 1]);
  t.same(torn, [94], 'the torn chunk reported');
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

t.test('a chunk the disk refuses (ENOSPC, short write) is reported write-failed and released; the segment stays in frame', async (t) => {
  const dir = tempDir(t, 'backlog');
  let room = 250;
  const released: number[] = [];
  const errors: string[] = [];
  const b = new ChunkBacklog({
    memoryMaxBytes: 0,
    dir,
    diskMaxBytes: 1 << 20,
    release: (c) => released.push(c[0]!),
    onError: (what, err) => errors.push(`${what}: ${(err as NodeJS.ErrnoException).code}`),
    writev: (fd, buffers, position) => {
      if (room <= 0) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      const first = buffers[0] as Buffer;
      const n = writevSync(fd, [first.subarray(0, Math.min(first.length, room, 30))], position);
      room -= n;
      return n;
    },
  });
  const results = Array.from({ length: 4 }, (_, i) => b.push(chunk(i)));
  t.same(results, ['kept', 'kept', 'write-failed', 'write-failed'], 'two chunks fit (208 of 250 bytes), the third is cut short');
  t.same(released, [0, 1, 2, 3], 'every chunk given back, kept or not');
  t.same(errors, ['write: ENOSPC', 'write: ENOSPC']);
  room = 1 << 20;
  t.equal(b.push(chunk(4)), 'kept', 'the disk has room again');
  t.same(drain(b), [0, 1, 4], 'read back in frame');
});
