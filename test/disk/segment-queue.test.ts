import { appendFileSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { FRAME_HEADER_BYTES, SegmentQueue, type SegmentQueueDeps, type SegmentQueueOptions } from '../../src/disk/segment-queue.js';
import { tempDir } from '../helpers/temp.js';
import { smallTmpfs, tmpfsUnavailable } from '../helpers/tmpfs.js';

interface Losses {
  frames: Buffer[];
  errors: string[];
}

function open(dir: string, opts: Partial<SegmentQueueOptions> = {}, deps: Partial<SegmentQueueDeps> = {}): SegmentQueue & { lost: Losses } {
  const lost: Losses = { frames: [], errors: [] };
  const q = new SegmentQueue(
    { dir, extension: '.seg', maxBytes: 1 << 20, segmentBytes: 1 << 20, flushBytes: 64 * 1024, flushIntervalMs: 100, fsyncIntervalMs: 1000, ...opts },
    { onLost: (_reason, frames, err) => (lost.frames.push(...frames), lost.errors.push(String((err as NodeJS.ErrnoException).code))), ...deps },
  );
  q.open();
  return Object.assign(q, { lost });
}

/** Reads and releases every segment, returning the payloads in order, as text. */
function drain(q: SegmentQueue): { frames: string[]; tornBytes: number } {
  const frames: string[] = [];
  let tornBytes = 0;
  for (let read = q.readNext(); read; read = q.readNext()) {
    frames.push(...read.frames.map((f) => f.toString('latin1')));
    tornBytes += read.tornBytes;
    q.release(read.segment);
  }
  return { frames, tornBytes };
}

/** Payloads of varied length, with bytes that are not text (NUL, invalid UTF-8) in them. */
const frame = (i: number): Buffer => Buffer.concat([Buffer.from(`${i}:`), Buffer.from([0, 0xff, 0xfe, 0x0a]), Buffer.alloc(20 + (i % 37), 0x61 + (i % 26))]);
const asText = (b: Buffer): string => b.toString('latin1');

t.test('frames come back exactly, in order, across segments; released segments are deleted', async (t) => {
  const dir = tempDir(t, 'queue');
  const q = open(dir, { segmentBytes: 1000, flushBytes: 200 });
  for (let i = 0; i < 100; i++) t.ok(q.append(frame(i)));
  q.flush();
  t.ok(readdirSync(dir).length > 3, 'several segments');
  t.ok(q.hasUnread());
  t.same(drain(q), { frames: Array.from({ length: 100 }, (_, i) => asText(frame(i))), tornBytes: 0 });
  t.notOk(q.hasUnread());
  t.equal(q.bytes, 0);
  t.same(readdirSync(dir), []);
  q.close();
});

t.test('a segment stays on disk until released, and a new run replays it', async (t) => {
  const dir = tempDir(t, 'queue');
  const q = open(dir);
  for (let i = 0; i < 5; i++) q.append(frame(i));
  t.equal(q.readNext()?.frames.length, 5);
  q.close();
  const again = open(dir);
  t.ok(again.hasUnread(), 'unreleased segment replayed by the next run');
  t.equal(again.onDisk, [0, 1, 2, 3, 4].reduce((n, i) => n + frame(i).length + FRAME_HEADER_BYTES, 0));
  t.same(drain(again).frames, [0, 1, 2, 3, 4].map((i) => asText(frame(i))));
  again.close();
});

t.test('appends beyond maxBytes are refused, not taken', async (t) => {
  const dir = tempDir(t, 'queue');
  const size = frame(0).length + FRAME_HEADER_BYTES;
  const q = open(dir, { maxBytes: size * 10 });
  const taken = Array.from({ length: 15 }, () => q.append(frame(0))).filter(Boolean).length;
  t.equal(taken, 10);
  t.equal(q.bytes, size * 10);
  q.close();
  t.equal(statSync(join(dir, readdirSync(dir)[0]!)).size, size * 10);
});

t.test('a torn last frame (a crash mid-write) is skipped and its bytes reported; the frames before it are read', async (t) => {
  for (const cut of [1, 3, FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + 5]) {
    const dir = tempDir(t, 'queue');
    const q = open(dir);
    for (let i = 0; i < 3; i++) q.append(frame(i));
    q.close();
    const path = join(dir, readdirSync(dir)[0]!);
    const whole = readFileSync(path);
    appendFileSync(path, Buffer.concat([Buffer.from([30, 0, 0, 0]), frame(3)]).subarray(0, cut));
    const again = open(dir);
    const read = again.readNext();
    t.same(read?.frames.map(asText), [0, 1, 2].map((i) => asText(frame(i))), `cut after ${cut} bytes`);
    t.equal(read?.tornBytes, cut);
    again.close();
    t.equal(whole.length + cut, statSync(path).size);
  }
});

t.test('short writes are repeated until complete', async (t) => {
  const dir = tempDir(t, 'queue');
  let calls = 0;
  const q = open(dir, { segmentBytes: 2000, flushBytes: 300 }, {
    // At most 7 bytes per call, and sometimes split inside a frame header.
    writev: (fd, buffers, position) => {
      calls++;
      const first = buffers[0] as Buffer;
      return writevSync(fd, [first.subarray(0, Math.min(first.length, 7))], position);
    },
  });
  for (let i = 0; i < 60; i++) q.append(frame(i));
  q.close();
  t.ok(calls > 60 * 3, `${calls} write calls`);
  t.same(q.lost.frames, []);
  const again = open(dir);
  t.same(drain(again), { frames: Array.from({ length: 60 }, (_, i) => asText(frame(i))), tornBytes: 0 });
  again.close();
});

t.test('ENOSPC part-way through a write keeps the whole frames written, truncates the rest, and hands it to onLost', async (t) => {
  const dir = tempDir(t, 'queue');
  // The disk takes `room` more bytes, then refuses; later it has room again.
  let room = 150;
  const q = open(dir, { flushBytes: 200 }, {
    writev: (fd, buffers, position) => {
      if (room <= 0) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      const first = buffers[0] as Buffer;
      const n = writevSync(fd, [first.subarray(0, Math.min(first.length, room))], position);
      room -= n;
      return n;
    },
  });
  const appended: Buffer[] = [];
  for (let i = 0; i < 8; i++) {
    appended.push(frame(i));
    q.append(frame(i));
  }
  q.flush();
  const lost = q.lost.frames.length;
  t.ok(lost > 0 && lost < 8, `${lost} of 8 frames lost`);
  t.same(q.lost.errors.slice(0, 1), ['ENOSPC']);
  const kept = 8 - lost;
  const segment = join(dir, readdirSync(dir)[0]!);
  const keptBytes = appended.slice(0, kept).reduce((n, f) => n + f.length + FRAME_HEADER_BYTES, 0);
  t.equal(statSync(segment).size, keptBytes, 'truncated after the last whole frame');
  t.equal(q.bytes, keptBytes);
  room = 1 << 20;
  for (let i = 8; i < 12; i++) {
    appended.push(frame(i));
    q.append(frame(i));
  }
  q.close();
  const again = open(dir);
  const back = drain(again);
  t.same(back, { frames: [...appended.slice(0, kept), ...appended.slice(8)].map(asText), tornBytes: 0 }, 'still in frame: the later frames follow');
  t.same(q.lost.frames.map(asText), appended.slice(kept, 8).map(asText), 'exactly the frames not kept were reported');
  again.close();
});

t.test('a write that makes no progress is a failure, not a loop', async (t) => {
  const dir = tempDir(t, 'queue');
  const q = open(dir, { flushBytes: 0 }, { writev: () => 0 });
  t.ok(q.append(frame(0)), 'taken');
  t.equal(q.lost.frames.length, 1, 'and lost, reported');
  t.equal(q.bytes, 0);
  q.close();
});

t.test('a real full disk (tmpfs): every frame is kept, refused or reported lost; the segments stay in frame', { skip: tmpfsUnavailable() }, async (t) => {
  const dir = smallTmpfs(t, 256 * 1024);
  const q = open(dir, { maxBytes: 1 << 30, segmentBytes: 64 * 1024, flushBytes: 4096 });
  let refused = 0;
  const n = 20_000;
  for (let i = 0; i < n; i++) if (!q.append(frame(i))) refused++;
  q.close();
  const lost = q.lost.frames.length;
  t.ok(lost > 0, `the disk filled: ${lost} frames reported lost`);
  t.same([...new Set(q.lost.errors)], ['ENOSPC']);
  const again = open(dir);
  const back = drain(again);
  t.equal(back.tornBytes, 0, 'no segment out of frame');
  t.equal(back.frames.length + lost + refused, n, `kept ${back.frames.length} + lost ${lost} + refused ${refused} = appended ${n}`);
  const lostSet = new Set(q.lost.frames.map(asText));
  const expected = Array.from({ length: n }, (_, i) => asText(frame(i))).filter((f) => !lostSet.has(f));
  t.same(back.frames, expected, 'what was kept is exactly what was appended and not reported lost, in order');
  again.close();
});

t.test('writeHead puts older frames before the unread ones and replaces segments being read', async (t) => {
  const dir = tempDir(t, 'queue');
  const q = open(dir, { segmentBytes: 150, flushBytes: 1 });
  const f = (i: number): Buffer => Buffer.from(`frame ${i}`);
  for (let i = 10; i < 30; i++) q.append(f(i));
  const first = q.readNext();
  const second = q.readNext();
  t.ok(first && second);
  // The caller still holds 8..9 (memory) and the unstored part of what it read; it writes them back at close.
  const held = [8, 9, ...[...first!.frames, ...second!.frames].map((b) => Number(b.toString().slice(6))).slice(2)];
  q.writeHead(held.map(f));
  q.close();
  // A stale .tmp from an interrupted close is ignored and removed.
  writeFileSync(join(dir, '0000000000000001.seg.tmp'), 'partial');
  const again = open(dir);
  t.same(
    drain(again).frames.map((s) => Number(s.slice(6))),
    [8, 9, ...Array.from({ length: 18 }, (_, k) => k + 12)],
  );
  t.same(readdirSync(dir), []);
  again.close();
});

t.test('a writeHead that cannot be written throws and changes nothing', async (t) => {
  const dir = tempDir(t, 'queue');
  const q = open(dir, {}, { writev: () => { throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' }); } });
  t.throws(() => q.writeHead([frame(1)]), { code: 'DOCKFLOW_SPOOL_FAILED' });
  t.same(readdirSync(dir), [], 'no temporary file left');
  t.equal(q.bytes, 0);
  q.close();
});

t.test('a queue directory that cannot be created is a clear error', async (t) => {
  const dir = tempDir(t, 'queue');
  writeFileSync(join(dir, 'file'), '');
  const q = new SegmentQueue(
    { dir: join(dir, 'file', 'sub'), extension: '.seg', maxBytes: 100, segmentBytes: 100, flushBytes: 0, flushIntervalMs: 1, fsyncIntervalMs: 1000 },
    { onLost: () => undefined },
  );
  t.throws(() => q.open(), { code: 'DOCKFLOW_SPOOL_FAILED' });
});

t.test('a torn segment left by a crash is truncated nowhere: a later run still appends in frame after it', async (t) => {
  const dir = tempDir(t, 'queue');
  const q = open(dir);
  q.append(frame(0));
  q.close();
  const path = join(dir, readdirSync(dir)[0]!);
  truncateSync(path, statSync(path).size - 2);
  const again = open(dir);
  again.append(frame(1));
  again.close();
  const third = open(dir);
  t.same(drain(third), { frames: [asText(frame(1))], tornBytes: frame(0).length + FRAME_HEADER_BYTES - 2 }, 'the new run writes a segment of its own');
  third.close();
});
