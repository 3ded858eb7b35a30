import { appendFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Spool, type SpoolOptions } from '../../src/store/spool.js';
import { silent } from './records.js';
import { tempDir } from '../helpers/temp.js';

function open(dir: string, opts: Partial<SpoolOptions> = {}): Spool {
  const s = new Spool({ dir, maxBytes: 1 << 20, ...opts }, { logger: silent });
  s.open();
  return s;
}

/** Reads and releases every segment, returning the entries in order. */
function drain(s: Spool): unknown[] {
  const out: unknown[] = [];
  for (let read = s.readNext(); read; read = s.readNext()) {
    out.push(...read.entries);
    s.release(read.segment);
  }
  return out;
}

const line = (i: number): string => JSON.stringify({ r: { i, pad: 'x'.repeat(40) } });

t.test('lines come back in order across segments, and released segments are deleted', async (t) => {
  const dir = tempDir(t, 'spool');
  const s = open(dir, { segmentBytes: 1000, flushBytes: 200 });
  for (let i = 0; i < 100; i++) t.ok(s.append(line(i)));
  s.flush();
  t.ok(readdirSync(dir).length > 3, 'several segments');
  t.ok(s.hasUnread());
  t.same(drain(s), Array.from({ length: 100 }, (_, i) => JSON.parse(line(i))));
  t.notOk(s.hasUnread());
  t.equal(s.bytes, 0);
  t.same(readdirSync(dir), []);
  s.close();
});

t.test('a segment stays on disk until released, and a new run finds it', async (t) => {
  const dir = tempDir(t, 'spool');
  const s = open(dir);
  for (let i = 0; i < 5; i++) s.append(line(i));
  const read = s.readNext();
  t.equal(read?.entries.length, 5);
  s.close();
  const again = open(dir);
  t.ok(again.hasUnread(), 'unreleased segment replayed by the next run');
  t.same(drain(again).length, 5);
  again.close();
});

t.test('appends beyond maxBytes are refused', async (t) => {
  const dir = tempDir(t, 'spool');
  const size = Buffer.byteLength(line(0)) + 1;
  const s = open(dir, { maxBytes: size * 10 });
  const taken = Array.from({ length: 15 }, (_, i) => s.append(line(i))).filter(Boolean).length;
  t.equal(taken, 10);
  t.equal(s.bytes, size * 10);
  s.close();
  t.equal(readFileSync(join(dir, readdirSync(dir)[0]!), 'utf8').split('\n').length - 1, 10);
});

t.test('a torn last line and a corrupt line are counted, the rest is read', async (t) => {
  const dir = tempDir(t, 'spool');
  const s = open(dir);
  for (let i = 0; i < 3; i++) s.append(line(i));
  s.close();
  const [name] = readdirSync(dir);
  const path = join(dir, name!);
  writeFileSync(path, readFileSync(path, 'utf8').replace(line(1), '{"r":garbage'));
  appendFileSync(path, line(3).slice(0, 20)); // a crash in the middle of a write
  const again = open(dir);
  const read = again.readNext();
  t.equal(read?.torn, 2);
  t.same(read?.entries, [JSON.parse(line(0)), JSON.parse(line(2))]);
  again.close();
});

t.test('writeHead puts older lines before the unread ones and replaces segments being read', async (t) => {
  const dir = tempDir(t, 'spool');
  const s = open(dir, { segmentBytes: 300, flushBytes: 1 });
  for (let i = 10; i < 30; i++) s.append(line(i));
  const first = s.readNext();
  const second = s.readNext();
  t.ok(first && second);
  // The caller still holds 8..9 (memory) and the unstored part of what it read; it writes them back at close.
  const held = [8, 9, ...[...first!.entries, ...second!.entries].map((e) => (e as { r: { i: number } }).r.i).slice(2)];
  s.writeHead(held.map(line));
  s.close();
  // A stale .tmp from an interrupted close is ignored and removed.
  writeFileSync(join(dir, '0000000000000001.ndjson.tmp'), 'partial');
  const again = open(dir);
  t.same(
    drain(again).map((e) => (e as { r: { i: number } }).r.i),
    [8, 9, ...Array.from({ length: 18 }, (_, k) => k + 12)],
  );
  t.same(readdirSync(dir), []);
  again.close();
});

t.test('a spool directory that cannot be created is a clear error', async (t) => {
  const dir = tempDir(t, 'spool');
  writeFileSync(join(dir, 'file'), '');
  const s = new Spool({ dir: join(dir, 'file', 'sub'), maxBytes: 100 }, { logger: silent });
  t.throws(() => s.open(), { code: 'DOCKFLOW_SPOOL_FAILED' });
});
